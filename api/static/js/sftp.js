// SFTP for one server: where to connect, as whom, and a password to set (shown once).

import {api} from './api.js';
import {describe} from './errors.js';
import {copyText, fill, h, say} from './ui.js';

export class SftpView {
  constructor(root) {
    this.root = root;
    this.instance = null;
    this.details = h('dl', {className: 'sftp-details'});
    this.command = h('code', {id: 'sftp-command'});
    this.message = h('p', {className: 'message sftp-message', role: 'status'});
    this.password = h('input', {id: 'sftp-password', type: 'text', readonly: true, spellcheck: 'false',
      autocomplete: 'off'});
    this.passwordPanel = h('div', {className: 'sftp-password', hidden: true},
      h('label', {for: 'sftp-password'}, 'Your new SFTP password (shown once)'), this.password,
      h('button', {type: 'button', onclick: () => this.copy()}, 'Copy'));
    this.setButton = h('button', {type: 'button', className: 'primary', onclick: () => this.newPassword()},
      'Set SFTP password');
    root.replaceChildren(
      h('p', {}, 'Upload worlds, mods and plugins with any SFTP client (FileZilla, WinSCP, sftp). Sign in with one of '
        + 'the SSH keys on your ', h('a', {href: '#account'}, 'account'), ' or with this server’s SFTP password.'),
      this.details, h('p', {}, 'From a terminal: ', this.command),
      h('div', {className: 'buttons'}, this.setButton), this.passwordPanel, this.message);
  }

  attach(instance) {
    if (this.instance?.id !== instance.id) {
      this.loaded = false;
      this.passwordPanel.hidden = true;
      this.password.value = '';
      fill(this.details);
      say(this.message, '');
    }
    this.instance = instance;
  }

  detach() {
    this.instance = null;
    this.loaded = false;
    this.password.value = '';
    this.passwordPanel.hidden = true;
  }

  show(info) {
    const rows = [['Host', info.host], ['Port', String(info.port)], ['User name', info.username],
      ['Password', info.password_set ? 'set (set a new one to replace it)' : 'not set'],
      ['Host key', info.host_key_fingerprint || 'unknown']];
    fill(this.details, rows.flatMap(([term, value]) => [h('dt', {}, term), h('dd', {}, h('code', {}, value))]));
    this.command.textContent = `sftp -P ${info.port} ${info.username}@${info.host}`;
  }

  async load() {
    if (!this.instance || this.loaded) return;
    try {
      this.show(await api.get(`/api/instances/${this.instance.id}/sftp`));
      this.loaded = true;
    } catch (error) {
      say(this.message, `The SFTP details could not be loaded. ${describe(error)}`, 'error');
    }
  }

  async newPassword() {
    if (!this.instance) return;
    try {
      const info = await api.post(`/api/instances/${this.instance.id}/sftp/password`);
      this.show(info);
      this.password.value = info.password;
      this.passwordPanel.hidden = false;
      this.password.focus();
      this.password.select();
      say(this.message, 'Copy it now: it is not shown again. Any earlier SFTP password of yours on this server no '
        + 'longer works.', 'ok');
    } catch (error) {
      say(this.message, `No password was set. ${describe(error)}`, 'error');
    }
  }

  async copy() {
    say(this.message, await copyText(this.password.value) ? 'Copied.' : 'Select the password and copy it.', 'ok');
  }
}

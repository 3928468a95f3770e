// The subusers of one server (its owner's tab): invite someone by email with permissions, change what each may
// do, take them off. The answer to an invitation is the same whether or not the email has an account yet.

import {api} from './api.js';
import {describe} from './errors.js';
import {confirmAction, fill, h, say, time} from './ui.js';

export const PERMISSIONS = [
  ['console', 'Console'], ['power', 'Power'], ['files.read', 'Read files'], ['files.write', 'Write files'],
  ['backups', 'Backups'], ['schedules', 'Schedules'], ['settings', 'Settings'],
];

let boxes = 0; // unique ids for the checkboxes' labels

function checkboxes(name, chosen) {
  return h('fieldset', {className: 'permissions'}, h('legend', {}, name),
    PERMISSIONS.map(([value, label]) => {
      const id = `perm-${++boxes}`;
      return h('span', {className: 'permission'},
        h('input', {type: 'checkbox', id, value, checked: chosen.includes(value)}),
        h('label', {for: id}, label));
    }));
}

function chosen(fieldset) {
  return [...fieldset.querySelectorAll('input[type=checkbox]:checked')].map((box) => box.value);
}

export class SubusersView {
  constructor(root) {
    this.root = root;
    this.instance = null;
    this.loaded = false;
    this.message = h('p', {className: 'message subusers-message', role: 'status'});
    this.email = h('input', {id: 'subuser-email', type: 'email', required: true, autocomplete: 'off',
      spellcheck: 'false', maxlength: '254'});
    this.permissions = checkboxes('Permissions', ['console']);
    this.error = h('p', {className: 'message', role: 'alert'});
    this.form = h('form', {className: 'panel subuser-form', novalidate: true, onsubmit: (e) => this.invite(e)},
      h('h3', {}, 'Invite someone'),
      h('p', {className: 'muted'}, 'They need a ZLH account with this email. They see this server beside their own and '
        + 'may do only what you tick; deleting the server, its subusers, its activity and billing stay yours.'),
      h('div', {className: 'field'}, h('label', {for: 'subuser-email'}, 'Their email'), this.email),
      this.permissions,
      h('div', {className: 'buttons'}, h('button', {type: 'submit', className: 'primary'}, 'Invite')),
      this.error);
    this.table = h('tbody');
    root.replaceChildren(this.form, this.message,
      h('div', {className: 'table-wrap'}, h('table', {className: 'subusers'},
        h('caption', {className: 'visually-hidden'}, 'People you gave access to this server'),
        h('thead', {}, h('tr', {}, ['Email', 'Permissions', 'Since', ''].map((l) => h('th', {scope: 'col'}, l)))),
        this.table)));
  }

  attach(instance) {
    if (this.instance?.id !== instance.id) {
      this.loaded = false;
      fill(this.table);
      say(this.message, '');
      say(this.error, '');
    }
    this.instance = instance;
  }

  detach() {
    this.instance = null;
    this.loaded = false;
  }

  url(userId = '') {
    return `/api/instances/${this.instance.id}/subusers${userId ? `/${userId}` : ''}`;
  }

  row(member) {
    const permissions = checkboxes(`Permissions of ${member.email}`, member.permissions);
    const note = h('span', {className: 'note', role: 'status'});
    const save = h('button', {type: 'button', 'aria-label': `Save permissions of ${member.email}`,
      onclick: () => this.change(member, chosen(permissions), note)}, 'Save');
    const remove = h('button', {type: 'button', className: 'danger', 'aria-label': `Remove ${member.email}`,
      onclick: () => this.remove(member)}, 'Remove');
    return h('tr', {dataset: {email: member.email}}, h('td', {}, member.email), h('td', {}, permissions),
      h('td', {}, time(member.created_at)), h('td', {}, save, remove, note));
  }

  async load(force = false) {
    if (!this.instance || (this.loaded && !force)) return;
    try {
      const page = await api.get(`${this.url()}?limit=100`);
      this.loaded = true;
      fill(this.table, page.items.map((member) => this.row(member)));
      if (!page.items.length) say(this.message, 'Nobody else has access to this server.');
    } catch (error) {
      say(this.message, `The subusers could not be loaded. ${describe(error)}`, 'error');
    }
  }

  async invite(event) {
    event.preventDefault();
    if (!this.email.value.trim() || !this.email.checkValidity()) {
      say(this.error, 'Enter the email address of their ZLH account.', 'error');
      this.email.focus();
      return;
    }
    say(this.error, '');
    try {
      const member = await api.post(this.url(), {json: {email: this.email.value.trim(),
        permissions: chosen(this.permissions)}});
      this.email.value = '';
      await this.load(true);
      say(this.message, `${member.email} can now use this server.`, 'ok');
    } catch (error) {
      say(this.error, describe(error), 'error');
    }
  }

  async change(member, permissions, note) {
    try {
      await api.patch(this.url(member.user_id), {json: {permissions}});
      say(note, 'Saved.', 'ok');
      say(this.message, `Permissions of ${member.email} saved.`, 'ok');
    } catch (error) {
      say(note, describe(error), 'error');
    }
  }

  async remove(member) {
    const ok = await confirmAction(`Remove ${member.email} from this server? They lose access at once.`, 'Remove');
    if (!ok) return;
    try {
      await api.del(this.url(member.user_id));
      await this.load(true);
      say(this.message, `${member.email} was removed.`, 'ok');
    } catch (error) {
      say(this.message, describe(error), 'error');
    }
  }
}

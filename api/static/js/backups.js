// Backups of one server: list, create, restore and delete (each with confirmation). Blocked states (402
// backups_blocked / billing_suspended) and the backups quota (409 quota_exceeded) are explained next to
// the button; deleting is always allowed, whatever the billing state.

import {api, followOperation, newKey} from './api.js';
import {describe, describeOperationError} from './errors.js';
import {confirmAction, fill, formatBytes, h, say, time} from './ui.js';

export class BackupsView {
  constructor(root, onOperation) {
    this.root = root;
    this.onOperation = onOperation;
    this.instance = null;
    this.busy = false;
    this.createButton = h('button', {type: 'button', className: 'primary', onclick: () => this.create()},
      'Create backup');
    this.message = h('p', {className: 'message backups-message', role: 'status'});
    this.table = h('tbody');
    // Retention: how many automatic (scheduled) backups this server keeps; older ones are pruned.
    this.keep = h('input', {type: 'number', min: 1, max: 1000, id: 'backup-keep', className: 'narrow',
      placeholder: 'default'});
    this.retentionNote = h('span', {className: 'hint'});
    const retention = h('form', {className: 'retention', onsubmit: (event) => {
      event.preventDefault();
      this.saveRetention();
    }},
      h('label', {for: 'backup-keep'}, 'Automatic backups kept '), this.keep, ' ',
      h('button', {type: 'submit', className: 'small'}, 'Save'), ' ', this.retentionNote);
    root.replaceChildren(h('div', {className: 'toolbar'}, this.createButton,
      h('button', {type: 'button', onclick: () => this.load(true)}, 'Refresh')),
    retention,
    this.message,
    h('div', {className: 'table-wrap'}, h('table', {className: 'backups'},
      h('caption', {className: 'visually-hidden'}, 'Backups of this server'),
      h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, 'Made'), h('th', {scope: 'col'}, 'Status'),
        h('th', {scope: 'col'}, 'Size'), h('th', {scope: 'col'}, 'Stored'), h('th', {scope: 'col'}, h('span', {className: 'visually-hidden'},
          'Actions')))),
      this.table)));
  }

  attach(instance) {
    if (this.instance?.id !== instance.id) {
      this.loaded = false;
      fill(this.table);
      say(this.message, '');
    }
    this.instance = instance;
  }

  detach() {
    this.instance = null;
    this.loaded = false;
  }

  async load(force = false) {
    if (!this.instance || (this.loaded && !force)) return;
    try {
      const {items} = await api.get(`/api/instances/${this.instance.id}/backups`);
      this.loaded = true;
      fill(this.table, items.map((backup) => h('tr', {dataset: {id: backup.id, status: backup.status}},
        h('td', {}, time(backup.created_at)), h('td', {}, backup.status), h('td', {}, formatBytes(backup.size)),
        h('td', {}, backup.location === 's3' ? 'Offsite (S3)' : 'On the server’s machine'),
        h('td', {}, h('button', {type: 'button', className: 'small', disabled: backup.status !== 'completed',
          'aria-label': `Restore the backup made ${backup.created_at}`, onclick: () => this.restore(backup)}, 'Restore'),
        ' ', h('button', {type: 'button', className: 'small danger',
          disabled: !['completed', 'failed'].includes(backup.status),
          'aria-label': `Delete the backup made ${backup.created_at}`, onclick: () => this.remove(backup)}, 'Delete')))));
      if (!items.length && !this.busy) say(this.message, 'No backups yet.');
      this.showRetention(await api.get(`/api/instances/${this.instance.id}/backups/retention`));
    } catch (error) {
      say(this.message, `Backups could not be loaded. ${describe(error)}`, 'error');
    }
  }

  showRetention(retention) {
    if (document.activeElement !== this.keep) this.keep.value = retention.keep ?? '';
    this.retentionNote.textContent = retention.effective
      ? `The newest ${retention.effective} automatic backups are kept${retention.keep === null ? ' (the default)' : ''};`
        + ' older ones are deleted after each backup. Backups you make yourself are always kept.'
      : 'Automatic backups are kept until the backups limit is reached.';
  }

  async saveRetention() {
    const value = this.keep.value.trim();
    try {
      const retention = await api.put(`/api/instances/${this.instance.id}/backups/retention`,
        {json: {keep: value === '' ? null : Number(value)}});
      this.showRetention(retention);
      say(this.message, 'Retention saved.', 'ok');
    } catch (error) {
      say(this.message, describe(error), 'error');
    }
  }

  async run(start, doing, done) {
    if (this.busy) return;
    this.busy = true;
    this.createButton.disabled = true;
    const instanceId = this.instance.id;
    say(this.message, doing);
    try {
      const accepted = await start();
      if (accepted === null) { // done at once (204): nothing to follow
        say(this.message, done, 'ok');
        return;
      }
      this.onOperation(accepted.operation_id, instanceId);
      await this.load(true);
      const op = await followOperation(accepted.operation_id, (o) => say(this.message,
        `${doing} (${o.phase}${o.step ? ` · ${o.step}` : ''})`), () => this.instance?.id !== instanceId);
      if (op?.phase === 'succeeded') say(this.message, done, 'ok');
      else if (op) say(this.message, describeOperationError(op.error), 'error');
    } catch (error) {
      say(this.message, describe(error), 'error');
    } finally {
      this.busy = false;
      this.createButton.disabled = false;
      // The backups list is its own read model: it may show a backup as pending (or being deleted) a moment
      // longer than the operation does. Look again a few times until nothing is on its way.
      for (let i = 0; i < 8 && this.instance?.id === instanceId; i += 1) {
        await this.load(true);
        if (!this.table.querySelector('tr[data-status="pending"], tr[data-status="deleting"]')) break;
        await new Promise((resolve) => setTimeout(resolve, 250 * (i + 1)));
      }
    }
  }

  create() {
    return this.run(() => api.post(`/api/instances/${this.instance.id}/backups`,
      {headers: {'Idempotency-Key': newKey()}}), 'Making a backup…', 'Backup made.');
  }

  async restore(backup) {
    const ok = await confirmAction('Restore the backup made '
      + `${new Date(backup.created_at).toLocaleString()}? The server’s current files are replaced by the backup’s.`,
    'Restore backup');
    if (!ok) return;
    await this.run(() => api.post(`/api/instances/${this.instance.id}/backups/${backup.id}/restore`,
      {headers: {'Idempotency-Key': newKey()}}), 'Restoring…', 'Backup restored.');
  }

  async remove(backup) {
    const ok = await confirmAction('Delete the backup made '
      + `${new Date(backup.created_at).toLocaleString()}? Its archive is removed for good.`, 'Delete backup');
    if (!ok) return;
    await this.run(() => api.del(`/api/instances/${this.instance.id}/backups/${backup.id}`,
      {headers: {'Idempotency-Key': newKey()}}), 'Deleting the backup…', 'Backup deleted.');
  }
}

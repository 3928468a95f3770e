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
    root.replaceChildren(h('div', {className: 'toolbar'}, this.createButton,
      h('button', {type: 'button', onclick: () => this.load(true)}, 'Refresh')),
    this.message,
    h('div', {className: 'table-wrap'}, h('table', {className: 'backups'},
      h('caption', {className: 'visually-hidden'}, 'Backups of this server'),
      h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, 'Made'), h('th', {scope: 'col'}, 'Status'),
        h('th', {scope: 'col'}, 'Size'), h('th', {scope: 'col'}, h('span', {className: 'visually-hidden'},
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
        h('td', {}, h('button', {type: 'button', className: 'small', disabled: backup.status !== 'completed',
          'aria-label': `Restore the backup made ${backup.created_at}`, onclick: () => this.restore(backup)}, 'Restore'),
        ' ', h('button', {type: 'button', className: 'small danger',
          disabled: !['completed', 'failed'].includes(backup.status),
          'aria-label': `Delete the backup made ${backup.created_at}`, onclick: () => this.remove(backup)}, 'Delete')))));
      if (!items.length && !this.busy) say(this.message, 'No backups yet.');
    } catch (error) {
      say(this.message, `Backups could not be loaded. ${describe(error)}`, 'error');
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

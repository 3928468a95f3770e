// The activity log of one server: who did what and when, newest first, a page at a time.

import {api} from './api.js';
import {describe} from './errors.js';
import {fill, formatBytes, h, say, time} from './ui.js';

const ACTIONS = {
  'instance.create': 'Created the server', 'instance.delete': 'Deleted the server', 'instance.move': 'Moved the server',
  'instance.rename': 'Renamed the server',
  'power.start': 'Started', 'power.stop': 'Stopped', 'power.restart': 'Restarted',
  'backup.create': 'Made a backup', 'backup.restore': 'Restored a backup', 'backup.delete': 'Deleted a backup',
  'console.command': 'Console command', 'file.write': 'Wrote a file',
  'file.mkdir': 'Made a folder', 'file.remove': 'Removed a file', 'file.rename': 'Renamed a file',
  'schedule.create': 'Created a schedule', 'schedule.update': 'Changed a schedule',
  'schedule.delete': 'Deleted a schedule', 'schedule.run': 'Schedule run',
  'billing.suspend': 'Suspended for non-payment', 'billing.unsuspend': 'Suspension lifted',
  'subuser.add': 'Gave access', 'subuser.update': 'Changed access', 'subuser.remove': 'Removed access',
};

function who(actor) {
  if (actor.kind === 'system') return 'ZLH (billing)';
  const name = actor.email || 'unknown user';
  return actor.kind === 'schedule' ? `${name}’s schedule` : name;
}

function detailText(item) {
  const d = item.detail || {};
  switch (item.action) {
    case 'console.command': return d.command;
    case 'file.write': return `${d.path} (${formatBytes(d.size)})`;
    case 'file.mkdir': return `${d.path}${d.via ? ` · over ${d.via.toUpperCase()}` : ''}`;
    case 'file.remove': return `${d.path}${d.directory ? ' (folder)' : ''}${d.via ? ` · over ${d.via.toUpperCase()}` : ''}`;
    case 'file.rename': return `${d.path} → ${d.target}${d.via ? ` · over ${d.via.toUpperCase()}` : ''}`;
    case 'schedule.create': case 'schedule.update': case 'schedule.delete':
      return [`“${d.name}”`, d.changed ? `changed: ${d.changed.join(', ')}` : '', d.enabled === false ? 'paused' : '']
        .filter(Boolean).join(' · ');
    case 'subuser.add': case 'subuser.update':
      return `${d.email}: ${d.permissions.length ? d.permissions.join(', ') : 'view only'}`;
    case 'subuser.remove': return d.email;
    case 'instance.rename': return `${d.previous} → ${d.name}`;
    case 'schedule.run': return `“${d.name}” · ${d.trigger === 'manual' ? 'run now' : 'on schedule'} · ${d.status}`;
    default: {
      const parts = [];
      if (d.status) parts.push(d.status);
      if (d.error) parts.push(`${d.error.code}`);
      if (d.origin) parts.push(d.origin.startsWith('schedule_run:') ? 'by a schedule' : `by ${d.origin}`);
      if (d.reason) parts.push(`reason: ${d.reason}`);
      return parts.join(' · ');
    }
  }
}

export class ActivityView {
  constructor(root) {
    this.root = root;
    this.instance = null;
    this.loaded = false;
    this.cursor = null;
    this.message = h('p', {className: 'message activity-message', role: 'status'});
    this.table = h('tbody');
    this.more = h('button', {type: 'button', hidden: true, onclick: () => this.loadMore()}, 'Older activity');
    root.replaceChildren(
      h('div', {className: 'toolbar'}, h('button', {type: 'button', onclick: () => this.load(true)}, 'Refresh')),
      this.message,
      h('div', {className: 'table-wrap'}, h('table', {className: 'activity'},
        h('caption', {className: 'visually-hidden'}, 'Who did what on this server, newest first'),
        h('thead', {}, h('tr', {}, ['When', 'Who', 'What', 'Details'].map((l) => h('th', {scope: 'col'}, l)))),
        this.table)),
      this.more);
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

  row(item) {
    return h('tr', {dataset: {action: item.action}}, h('td', {}, time(item.at)), h('td', {}, who(item.actor)),
      h('td', {}, ACTIONS[item.action] || item.action), h('td', {}, h('span', {className: 'detail-text'},
        detailText(item))));
  }

  async load(force = false) {
    if (!this.instance || (this.loaded && !force)) return;
    try {
      const page = await api.get(`/api/instances/${this.instance.id}/activity?limit=50`);
      this.loaded = true;
      fill(this.table, page.items.map((item) => this.row(item)));
      this.cursor = page.next_cursor;
      this.more.hidden = !this.cursor;
      say(this.message, page.items.length ? '' : 'Nothing has happened on this server yet.');
    } catch (error) {
      say(this.message, `The activity could not be loaded. ${describe(error)}`, 'error');
    }
  }

  async loadMore() {
    if (!this.cursor) return;
    try {
      const page = await api.get(`/api/instances/${this.instance.id}/activity?limit=50&cursor=`
        + encodeURIComponent(this.cursor));
      this.table.append(...page.items.map((item) => this.row(item)));
      this.cursor = page.next_cursor;
      this.more.hidden = !this.cursor;
    } catch (error) {
      say(this.message, describe(error), 'error');
    }
  }
}

// Servers: the create form, the cards (pending → real), power and delete, and the detail panel
// (console, files, backups, schedules, activity, subusers) of one server. A server shared with the caller (they are
// its subuser) shows only what its owner let them do. Cards are updated in place with a fixed geometry, so
// a card changing state never moves the page and never loses keyboard focus.

import {ActivityView} from './activity.js';
import {api, newKey} from './api.js';
import {BackupsView} from './backups.js';
import {ConsoleView} from './console.js';
import {describe, describeOperationError} from './errors.js';
import {FilesView} from './files.js';
import {SchedulesView} from './schedules.js';
import {SettingsView} from './settings.js';
import {SubusersView} from './subusers.js';
import {StatsView, fetchStats, playersText} from './stats.js';
import {SftpView} from './sftp.js';
import {confirmAction, copyText, h, say} from './ui.js';

const STATUS_LABELS = {provisioning: 'Setting up', running: 'Running', stopped: 'Stopped', suspended: 'Suspended',
  failed: 'Failed', deleting: 'Deleting', deleted: 'Deleted', unreachable: 'Unreachable'};
const KIND_LABELS = {create: 'Create', start: 'Start', stop: 'Stop', restart: 'Restart', backup: 'Backup',
  restore: 'Restore', delete: 'Delete', move: 'Move'};
// The permission each tab needs; null: the owner's only (a subuser never sees it).
const TAB_PERMISSIONS = {console: 'console', files: 'files.read', backups: 'backups', schedules: 'schedules',
  settings: 'settings', activity: null, subusers: null, sftp: null};
const FAST_POLL_MS = 600;
const SLOW_POLL_MS = 4000;

let templates = []; // GET /api/templates: what the form offers
const instances = new Map(); // id → instance from GET /api/instances
const cards = new Map(); // id → {root, refs}
const operations = new Map(); // instance id → the latest GET /api/operations/{id} answer of its pending operation
const failures = new Map(); // instance id → {kind, error} of its last failed operation
const inflight = new Set(); // instance ids with a power or delete request on the way
const players = new Map(); // instance id → "3 / 20 players" of a running game server (its latest stats sample)
let createKey = null;
let creating = false;
let visible = false;
let timer = null;
let selected = null;
let consoleView;
let filesView;
let backupsView;
let schedulesView;
let activityView;
let subusersView;
let settingsView;
let statsView;
let sftpView;

const $ = (id) => document.getElementById(id);

export function setup() {
  $('new-server').addEventListener('click', () => ($('create-form').hidden ? openForm() : closeForm()));
  $('create-cancel').addEventListener('click', closeForm);
  $('create-kind').addEventListener('change', fillTemplates);
  $('create-form').addEventListener('submit', submitCreate);
  $('create-form').addEventListener('keydown', (event) => {
    if (event.key === 'Escape') closeForm();
  });
  $('detail-close').addEventListener('click', closeDetail);
  for (const tab of document.querySelectorAll('#server-detail [data-tab]')) {
    tab.addEventListener('click', () => showTab(tab.dataset.tab));
  }
  consoleView = new ConsoleView($('tab-console'));
  filesView = new FilesView($('tab-files'));
  backupsView = new BackupsView($('tab-backups'), (operationId, instanceId) => track(instanceId, operationId));
  schedulesView = new SchedulesView($('tab-schedules'));
  activityView = new ActivityView($('tab-activity'));
  subusersView = new SubusersView($('tab-subusers'));
  settingsView = new SettingsView($('tab-settings'), () => poll());
  statsView = new StatsView($('server-stats'));
  sftpView = new SftpView($('tab-sftp'));
  fillTemplates();
}

export function enter() {
  visible = true;
  loadTemplates();
  poll();
}

export function leave() {
  visible = false;
  clearTimeout(timer);
  timer = null;
  closeDetail();
}

/** The caller's instances, as last loaded (for the support form). */
export function known() {
  return [...instances.values()];
}

// --- The create form -------------------------------------------------------------------------

async function loadTemplates() {
  try {
    templates = (await api.get('/api/templates')).items;
  } catch {
    return; // the form keeps what it had; creating still reports any problem
  }
  const chosen = $('create-template').value;
  fillTemplates();
  if ([...$('create-template').options].some((o) => o.value === chosen && !o.disabled)) {
    $('create-template').value = chosen;
  }
}

function fillTemplates() {
  // A template the operator has not configured yet (Paper without its jar) is shown, but cannot be chosen.
  const offered = templates.filter((t) => t.kind === $('create-kind').value);
  $('create-template').replaceChildren(...offered.map((t) => h('option',
    {value: t.name, title: t.description, disabled: !t.available},
    t.available ? t.name : `${t.name} (not available yet)`)));
}

function openForm() {
  createKey = newKey(); // one key per opening: retries and double clicks reuse it
  $('create-form').hidden = false;
  $('new-server').setAttribute('aria-expanded', 'true');
  say($('create-error'), '');
  $('create-name').focus();
}

function closeForm() {
  createKey = null;
  $('create-form').reset();
  fillTemplates();
  $('create-form').hidden = true;
  $('new-server').setAttribute('aria-expanded', 'false');
  $('new-server').focus();
}

async function submitCreate(event) {
  event.preventDefault();
  if (creating) return; // a second click while the first is on its way sends nothing
  const name = $('create-name');
  if (!name.checkValidity()) {
    say($('create-error'), 'Enter a name of lower-case letters, digits and dashes, starting with a letter.',
      'error');
    name.focus();
    return;
  }
  creating = true;
  $('create-submit').disabled = true;
  say($('create-error'), 'Creating…');
  const body = {kind: $('create-kind').value, name: name.value, template: $('create-template').value};
  try {
    const accepted = await api.post('/api/instances', {json: body, headers: {'Idempotency-Key': createKey}});
    closeForm();
    await refresh();
    track(accepted.instance_id, accepted.operation_id);
    cards.get(accepted.instance_id)?.root.querySelector('h3')?.focus();
  } catch (error) {
    // The key is kept: sending again is a safe retry of the same request.
    say($('create-error'), describe(error), 'error');
  } finally {
    creating = false;
    $('create-submit').disabled = false;
  }
}

// --- Loading and polling -----------------------------------------------------------------------

function schedule(delay) {
  clearTimeout(timer);
  timer = visible ? setTimeout(poll, delay) : null;
}

async function poll() {
  clearTimeout(timer);
  timer = null;
  try {
    await refresh();
    say($('servers-message'), instances.size ? '' : 'You have no servers yet. Create one with “New server”.');
  } catch (error) {
    if (error.status !== 401) say($('servers-message'), `Your servers could not be loaded. ${describe(error)}`, 'error');
  }
  const busy = [...instances.values()].some((i) => i.pending_operation_id) || inflight.size > 0;
  schedule(busy ? FAST_POLL_MS : SLOW_POLL_MS);
}

/** Remembers an operation just started, so its card turns pending at once and is polled fast. */
function track(instanceId, operationId) {
  const instance = instances.get(instanceId);
  if (instance && !instance.pending_operation_id) instance.pending_operation_id = operationId;
  failures.delete(instanceId);
  render();
  schedule(FAST_POLL_MS);
}

async function refresh() {
  const {items} = await api.get('/api/instances');
  const previous = new Map(instances);
  instances.clear();
  for (const item of items) instances.set(item.id, item);
  await Promise.all(items.map(async (item) => {
    const before = previous.get(item.id)?.pending_operation_id;
    const operationId = item.pending_operation_id || (before && before !== item.pending_operation_id ? before : null);
    if (!operationId) {
      operations.delete(item.id);
      return;
    }
    try {
      const op = await api.get(`/api/operations/${operationId}`);
      if (op.phase === 'failed') failures.set(item.id, {kind: op.kind, error: op.error});
      else if (op.phase === 'succeeded') failures.delete(item.id);
      if (item.pending_operation_id) operations.set(item.id, op);
      else operations.delete(item.id);
    } catch (error) {
      if (error.status !== 404) throw error;
    }
  }));
  await loadPlayers(items);
  render();
}

/** The player count of every running game server, from its latest stats sample (unknown: no count shown). */
async function loadPlayers(items) {
  const games = items.filter((i) => i.kind === 'game' && i.status === 'running');
  for (const id of [...players.keys()]) if (!games.some((i) => i.id === id)) players.delete(id);
  await Promise.all(games.map(async (item) => {
    const stats = await fetchStats(item.id);
    const text = playersText(stats?.current);
    if (text) players.set(item.id, text);
    else players.delete(item.id);
  }));
}

// --- Cards -----------------------------------------------------------------------------------

function render() {
  const list = $('server-list');
  for (const [id, card] of cards) {
    if (!instances.has(id)) {
      card.root.remove();
      cards.delete(id);
    }
  }
  let previous = null;
  for (const instance of instances.values()) { // newest first, as the API lists them
    let card = cards.get(instance.id);
    if (card && card.root.dataset.name !== instance.name) { // renamed: its labels name it, so build it again
      card.root.remove();
      cards.delete(instance.id);
      card = null;
    }
    if (!card) {
      card = buildCard(instance);
      cards.set(instance.id, card);
    }
    const want = previous ? previous.nextSibling : list.firstChild;
    if (card.root !== want) list.insertBefore(card.root, want);
    previous = card.root;
    updateCard(card, instance);
  }
  if (selected) {
    const instance = instances.get(selected);
    if (instance) updateDetail(instance);
    else closeDetail();
  }
}

function buildCard(instance) {
  const refs = {};
  const button = (label, handler, extra = {}) => h('button', {type: 'button', onclick: handler, ...extra}, label);
  refs.status = h('span', {className: 'badge'});
  refs.address = h('code', {className: 'address-text'});
  refs.copy = button('Copy', async () => {
    const ok = await copyText(instances.get(instance.id)?.address || '');
    say(refs.note, ok ? 'Address copied.' : 'The address could not be copied; select it instead.', ok ? 'ok' : 'error');
  }, {className: 'quiet small', 'aria-label': `Copy the address of ${instance.name}`});
  refs.shared = h('p', {className: 'muted shared', hidden: true});
  refs.players = h('span', {className: 'players'});
  refs.op = h('p', {className: 'op', role: 'status'});
  refs.note = h('p', {className: 'note', role: 'status'});
  refs.start = button('Start', () => power(instance.id, 'start'));
  refs.stop = button('Stop', () => power(instance.id, 'stop'));
  refs.restart = button('Restart', () => power(instance.id, 'restart'));
  refs.manage = button('Manage', () => openDetail(instance.id), {'aria-label': `Manage ${instance.name}`});
  refs.delete = button('Delete', () => remove(instance.id), {className: 'danger',
    'aria-label': `Delete ${instance.name}`});
  const root = h('li', {className: 'card', dataset: {id: instance.id, name: instance.name}},
    h('div', {className: 'card-head'}, h('h3', {tabindex: '-1'}, instance.name), refs.status),
    h('p', {className: 'muted kind'}, `${instance.kind === 'game' ? 'Game server' : 'Dev container'} · `
      + instance.template, refs.players),
    h('p', {className: 'address'}, refs.address, refs.copy),
    refs.shared, refs.op, refs.note,
    h('div', {className: 'actions', role: 'group', 'aria-label': `Actions for ${instance.name}`},
      h('div', {className: 'power'}, refs.start, refs.stop, refs.restart),
      h('div', {className: 'more'}, refs.manage, refs.delete)));
  return {root, refs};
}

function operationLine(instance) {
  const op = operations.get(instance.id) || instance.pending_operation;
  if (instance.pending_operation_id) {
    const kind = KIND_LABELS[op?.kind] || 'Working';
    const phase = op?.phase || 'queued';
    return {text: `${kind}: ${phase}${op?.step ? ` · ${op.step}` : ''}`, kind: 'info'};
  }
  const failure = failures.get(instance.id);
  if (failure) {
    const kind = KIND_LABELS[failure.kind] || 'Action';
    const hint = instance.status === 'failed' ? ' You can delete this server.' : '';
    return {text: `${kind} failed: ${describeOperationError(failure.error)}${hint}`, kind: 'error',
      title: failure.error?.message};
  }
  return {text: '', kind: 'info'};
}

function updateCard(card, instance) {
  const {root, refs} = card;
  const pending = Boolean(instance.pending_operation_id);
  const busy = pending || inflight.has(instance.id);
  root.dataset.status = instance.status;
  root.dataset.pending = pending ? 'true' : 'false';
  refs.status.textContent = pending && instance.status === 'provisioning' ? 'Pending'
    : STATUS_LABELS[instance.status] || instance.status;
  refs.status.dataset.status = instance.status;
  refs.address.textContent = instance.address || 'No address yet';
  refs.players.textContent = players.has(instance.id) ? ` · ${players.get(instance.id)}` : '';
  refs.copy.hidden = !instance.address;
  const line = operationLine(instance);
  refs.op.textContent = line.text;
  refs.op.dataset.kind = line.kind;
  if (line.title) refs.op.title = line.title;
  else refs.op.removeAttribute('title');
  const status = instance.status;
  const shared = instance.role === 'subuser';
  const noPower = shared && !may(instance, 'power');
  refs.shared.hidden = !shared;
  refs.shared.textContent = shared ? `Shared with you: ${(instance.permissions || []).join(', ') || 'view only'}` : '';
  refs.start.disabled = busy || noPower || status !== 'stopped';
  refs.stop.disabled = busy || noPower || status !== 'running';
  refs.restart.disabled = busy || noPower || status !== 'running';
  refs.manage.disabled = ['deleting', 'deleted'].includes(status) || (pending && status === 'provisioning');
  refs.delete.disabled = busy || status === 'deleted';
  refs.delete.hidden = shared;
}

async function power(id, action) {
  if (inflight.has(id)) return;
  inflight.add(id);
  const card = cards.get(id);
  say(card.refs.note, '');
  render();
  try {
    const accepted = await api.post(`/api/instances/${id}/power`, {json: {action},
      headers: {'Idempotency-Key': newKey()}});
    track(id, accepted.operation_id);
  } catch (error) {
    say(card.refs.note, describe(error), error.status === 409 ? 'info' : 'error');
  } finally {
    inflight.delete(id);
    render();
  }
}

async function remove(id) {
  const instance = instances.get(id);
  if (!instance || inflight.has(id)) return;
  const ok = await confirmAction(`Delete “${instance.name}”? The server and its files are removed; its backups `
    + 'are kept. This cannot be undone.', 'Delete server');
  if (!ok) {
    cards.get(id)?.refs.delete.focus();
    return;
  }
  inflight.add(id);
  const card = cards.get(id);
  render();
  try {
    const accepted = await api.del(`/api/instances/${id}`, {headers: {'Idempotency-Key': newKey()}});
    if (selected === id) closeDetail();
    track(id, accepted.operation_id);
  } catch (error) {
    say(card.refs.note, describe(error), 'error');
  } finally {
    inflight.delete(id);
    render();
  }
}

// --- The detail panel ------------------------------------------------------------------------

function openDetail(id) {
  selected = id;
  $('server-detail').hidden = false;
  updateDetail(instances.get(id));
  showTab(document.querySelector('#server-detail [aria-pressed=true]')?.dataset.tab || 'console');
  $('detail-title').setAttribute('tabindex', '-1');
  $('detail-title').focus();
}

function closeDetail() {
  consoleView?.detach();
  filesView?.detach();
  backupsView?.detach();
  schedulesView?.detach();
  activityView?.detach();
  subusersView?.detach();
  settingsView?.detach();
  statsView?.detach();
  sftpView?.detach();
  const wasOpen = selected !== null;
  selected = null;
  $('server-detail').hidden = true;
  if (wasOpen && visible) $('server-list').querySelector('.card h3')?.focus();
}

function updateDetail(instance) {
  $('detail-title').textContent = `${instance.name} (${STATUS_LABELS[instance.status] || instance.status})`;
  consoleView.attach(instance);
  filesView.attach(instance);
  backupsView.attach(instance);
  schedulesView.attach(instance);
  activityView.attach(instance);
  sftpView.attach(instance);
  statsView.attach(instance);
  subusersView.attach(instance);
  settingsView.attach(instance);
  for (const tab of document.querySelectorAll('#server-detail [data-tab]')) {
    const need = TAB_PERMISSIONS[tab.dataset.tab];
    tab.hidden = instance.role === 'subuser' && (need === null || !may(instance, need));
  }
  const current = document.querySelector('#server-detail [data-tab][aria-pressed=true]');
  if (current?.hidden) {
    const first = document.querySelector('#server-detail [data-tab]:not([hidden])');
    showTab(first ? first.dataset.tab : null); // none: the owner gave view-only access
  }
}

/** Whether the caller may do `permission` on the instance (an owner may do everything). */
function may(instance, permission) {
  return instance.role !== 'subuser' || (instance.permissions || []).includes(permission);
}

function showTab(name) {
  for (const tab of document.querySelectorAll('#server-detail [data-tab]')) {
    tab.setAttribute('aria-pressed', String(tab.dataset.tab === name));
    $(`tab-${tab.dataset.tab}`).hidden = tab.dataset.tab !== name || tab.hidden;
  }
  if (name === 'files') filesView.load();
  if (name === 'backups') backupsView.load();
  if (name === 'schedules') schedulesView.load();
  if (name === 'activity') activityView.load(true);
  if (name === 'subusers') subusersView.load(true);
  if (name === 'sftp') sftpView.load();
}

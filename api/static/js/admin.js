// The operators' side (admin token): users, repairs, queues, nodes, projections (with rebuild progress)
// and the audit view of one stream. A token is shown only once: right after creating a user.

import {api} from './api.js';
import {describe} from './errors.js';
import {copyText, fill, formatAge, h, say, time} from './ui.js';

const STALE_AFTER_SECONDS = 15 * 60; // ZLH_OPERATION_STALE_AFTER's default
const REFRESH_MS = 5000;
const REBUILD_POLL_MS = 500;
let timer = null;
let rebuildTimer = null;
const el = {};

function table(id, caption, columns) {
  const body = h('tbody');
  el[id] = body;
  return h('div', {className: 'table-wrap'}, h('table', {id},
    h('caption', {className: 'visually-hidden'}, caption),
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', {scope: 'col'}, c)))), body));
}

function section(id, title, ...children) {
  return h('section', {className: 'panel admin-section', id, 'aria-labelledby': `${id}-title`},
    h('h2', {id: `${id}-title`}, title), ...children);
}

function status(id) {
  el[id] = h('p', {className: 'message', id, role: 'status'});
  return el[id];
}

export function setup() {
  const root = document.getElementById('view-admin');
  el.tokenBox = h('div', {className: 'token-box', id: 'new-token', hidden: true});
  root.replaceChildren(h('h1', {id: 'admin-title', tabindex: '-1'}, 'Operators'),
    section('admin-users', 'Users',
      h('form', {id: 'user-form', className: 'inline-form', onsubmit: createUser},
        h('label', {for: 'user-email'}, 'Email'),
        h('input', {id: 'user-email', type: 'email', required: true, autocomplete: 'off'}),
        h('label', {className: 'check'}, h('input', {id: 'user-admin', type: 'checkbox'}), 'Operator'),
        h('button', {type: 'submit', className: 'primary'}, 'Create user')),
      status('user-message'), el.tokenBox,
      h('form', {id: 'stripe-form', className: 'inline-form', onsubmit: linkStripe},
        h('label', {for: 'stripe-user'}, 'User id'),
        h('input', {id: 'stripe-user', required: true, autocomplete: 'off', spellcheck: 'false'}),
        h('label', {for: 'stripe-customer'}, 'Stripe customer'),
        h('input', {id: 'stripe-customer', required: true, placeholder: 'cus_…', autocomplete: 'off',
          spellcheck: 'false'}),
        h('button', {type: 'submit'}, 'Link customer')),
      status('stripe-message'),
      status('users-message'),
      table('users-table', 'Users', ['Email', 'Id', 'Operator', 'Billing', 'Stripe customer', ''])),
    section('admin-repairs', 'Repairs', status('controller-summary'),
      h('div', {id: 'soak', className: 'soak'},
        h('h3', {}, 'Soak report (last 7 days)'),
        h('p', {id: 'soak-verdict', className: 'soak-verdict', role: 'status'}),
        h('div', {className: 'table-wrap'}, h('table', {id: 'soak-table'},
          h('caption', {className: 'visually-hidden'}, 'What live mode would have done, per repair kind'),
          h('thead', {}, h('tr', {}, ['Kind', 'Level', 'Proposed', 'Would run', 'Would escalate', 'Skipped (why)']
            .map((c) => h('th', {scope: 'col'}, c)))), el.soakRows = h('tbody'))),
        h('p', {id: 'soak-targets', className: 'muted'})),
      status('repairs-message'),
      table('repairs-table', 'Repairs', ['Kind', 'Level', 'Target', 'Status', 'Mode', 'Proposed'])),
    section('admin-queues', 'Queues', status('queues-message'),
      table('queues-table', 'Queues', ['Queue', 'Pending', 'Oldest pending', 'Lag (events)', 'Health'])),
    section('admin-nodes', 'Nodes', status('nodes-message'), status('node-action-message'),
      table('nodes-table', 'Nodes', ['Node', 'Status', 'Servers', 'Memory (MB)', 'Disk (MB)', 'CPUs', 'Ports',
        'Last seen', ''])),
    section('admin-projections', 'Projections', status('projections-message'), status('rebuild-message'),
      table('projections-table', 'Projections', ['Name', 'Position', 'Lag', 'Rebuild', ''])),
    section('admin-audit', 'Audit',
      h('form', {id: 'audit-form', className: 'inline-form', onsubmit: loadStream},
        h('label', {for: 'audit-stream'}, 'Stream id'),
        h('input', {id: 'audit-stream', required: true, autocomplete: 'off', spellcheck: 'false'}),
        h('button', {type: 'submit', className: 'primary'}, 'Show events'),
        h('button', {type: 'button', id: 'audit-verify', onclick: verifyStream}, 'Verify chain')),
      status('audit-message'),
      table('audit-table', 'Events of the stream', ['Version', 'Type', 'Time', 'Data'])));
}

export function enter() {
  refresh();
  clearInterval(timer);
  timer = setInterval(refresh, REFRESH_MS);
}

export function leave() {
  clearInterval(timer);
  clearTimeout(rebuildTimer);
  timer = rebuildTimer = null;
  el.tokenBox.hidden = true;
  el.tokenBox.replaceChildren(); // the one-time token does not outlive the visit
}

function refresh() {
  loadUsers();
  loadRepairs();
  loadSoak();
  loadQueues();
  loadNodes();
  loadProjections();
}

// --- Users -----------------------------------------------------------------------------------

async function createUser(event) {
  event.preventDefault();
  const email = document.getElementById('user-email');
  const admin = document.getElementById('user-admin');
  say(el['user-message'], 'Creating…');
  try {
    const user = await api.post('/api/admin/users', {json: {email: email.value.trim(), admin: admin.checked}});
    loadUsers();
    const tokenCode = h('code', {id: 'new-token-value'}, user.token);
    fill(el.tokenBox,
      h('p', {}, h('strong', {}, `Token for ${user.email}. `),
        'It is shown this once and never again: hand it over now.'),
      tokenCode,
      h('button', {type: 'button', className: 'small', onclick: async () => say(el['user-message'],
        (await copyText(user.token)) ? 'Token copied.' : 'Select the token and copy it.', 'ok')}, 'Copy token'),
      h('button', {type: 'button', className: 'small quiet', onclick: () => {
        el.tokenBox.hidden = true;
        el.tokenBox.replaceChildren();
      }}, 'Done'));
    el.tokenBox.hidden = false;
    document.getElementById('stripe-user').value = user.id;
    email.value = '';
    admin.checked = false;
    say(el['user-message'], `User ${user.email} created.`, 'ok');
  } catch (error) {
    say(el['user-message'], describe(error), 'error');
  }
}

const BILLING_LABELS = {good_standing: 'Good standing', warned: 'Warned', final_warning: 'Final warning',
  suspended: 'Suspended'};

function loadUsers() {
  return loadInto('users', '/api/admin/users', (u) => h('tr', {dataset: {email: u.email}},
    h('td', {}, u.email), h('td', {}, h('code', {}, u.id)), h('td', {}, u.admin ? 'yes' : 'no'),
    h('td', {}, BILLING_LABELS[u.billing_state] || u.billing_state),
    h('td', {}, u.stripe_customer_id ? h('code', {}, u.stripe_customer_id) : '—'),
    h('td', {}, h('button', {type: 'button', className: 'small', onclick: () => {
      document.getElementById('stripe-user').value = u.id;
      document.getElementById('stripe-customer').focus();
    }}, 'Link Stripe…'))), 'No users yet.');
}

async function linkStripe(event) {
  event.preventDefault();
  const userId = document.getElementById('stripe-user').value.trim();
  const customer = document.getElementById('stripe-customer').value.trim();
  say(el['stripe-message'], 'Linking…');
  try {
    await api.put(`/api/admin/users/${encodeURIComponent(userId)}/stripe`, {json: {customer_id: customer}});
    say(el['stripe-message'], `Stripe customer ${customer} linked.`, 'ok');
    loadUsers();
  } catch (error) {
    say(el['stripe-message'], describe(error), 'error');
  }
}

// --- Repairs, queues, projections --------------------------------------------------------------

async function loadInto(name, path, render, empty) {
  try {
    const {items} = await api.get(path);
    fill(el[`${name}-table`], items.map(render));
    say(el[`${name}-message`], items.length ? '' : empty);
  } catch (error) {
    const text = error.status === 404 ? 'This server does not offer this list yet.' : describe(error);
    say(el[`${name}-message`], text, 'error');
  }
}

function controllerSummary(c) {
  if (!c) return '';
  const mode = c.mode === 'live'
    ? 'Mode: live (Level 1 repairs run; Level 2 and 3 are only proposed).'
    : 'Mode: dry-run (repairs are proposed and recorded; nothing is changed).';
  const term = c.epoch ? ` Leadership term ${c.epoch}.` : ' No controller has led yet.';
  const drift = c.drifting === undefined ? '' : ` ${c.drifting} target(s) drifting.`;
  return mode + term + drift;
}

async function loadRepairs() {
  try {
    const body = await api.get('/api/admin/repairs');
    say(el['controller-summary'], controllerSummary({...body.controller, drifting: (body.drift || []).length}));
  } catch (error) {
    say(el['controller-summary'], '');
  }
  return loadInto('repairs', '/api/admin/repairs', (r) => h('tr', {dataset: {status: r.status}},
    h('td', {}, r.kind), h('td', {}, String(r.level)),
    h('td', {}, h('code', {}, typeof r.target === 'string' ? r.target : JSON.stringify(r.target))),
    h('td', {}, r.reason ? `${r.status} (${r.reason})` : r.status), h('td', {}, r.mode),
    h('td', {}, time(r.created_at))), 'No repairs proposed.');
}

async function loadSoak() {
  const verdict = document.getElementById('soak-verdict');
  try {
    const report = await api.get('/api/admin/repairs/report?since=7d');
    say(verdict, report.verdict, report.touched_suspended.length ? 'error' : 'ok');
    fill(el.soakRows, report.kinds.map((k) => h('tr', {dataset: {kind: k.kind}}, h('th', {scope: 'row'}, k.kind),
      h('td', {}, String(k.level)), h('td', {}, String(k.proposed)), h('td', {}, String(k.would_run)),
      h('td', {}, String(k.would_escalate)),
      h('td', {}, Object.entries(k.skipped).map(([why, n]) => `${n} ${why}`).join(', ') || '—'))));
    document.getElementById('soak-targets').textContent = report.targets.length
      ? `Drifted most: ${report.targets.slice(0, 5).map((t) => `${t.target} (${t.drift_changes} changes, `
        + `${t.repairs} repairs)`).join('; ')}` : 'No target drifted.';
  } catch (error) {
    say(verdict, error.status === 404 ? 'This server has no soak report yet.' : describe(error), 'error');
  }
}

function loadQueues() {
  return loadInto('queues', '/api/admin/queues', (q) => {
    const stale = (q.oldest_pending_age_seconds ?? 0) > STALE_AFTER_SECONDS;
    return h('tr', {dataset: {name: q.name, stale: String(stale)}}, h('th', {scope: 'row'}, q.name),
      h('td', {}, String(q.pending)), h('td', {}, formatAge(q.oldest_pending_age_seconds)),
      h('td', {}, String(q.lag)), h('td', {className: stale ? 'bad' : 'good'}, stale ? 'Stale' : 'OK'));
  }, 'No queues.');
}

// --- Nodes (README "More than one host") ------------------------------------------------------------

function used(n, what) {
  return `${n.allocated[what]} of ${n.capacity[what]}`;
}

function loadNodes() {
  return loadInto('nodes', '/api/admin/nodes', (n) => {
    const cordoned = n.status === 'cordoned';
    const button = h('button', {type: 'button', className: 'small', 'aria-label': `${cordoned ? 'Uncordon' : 'Cordon'}`
      + ` ${n.name}`}, cordoned ? 'Uncordon' : 'Cordon');
    button.addEventListener('click', () => cordon(n, cordoned ? 'uncordon' : 'cordon', button));
    return h('tr', {dataset: {name: n.name, status: n.status}}, h('th', {scope: 'row'}, n.name),
      h('td', {className: n.status === 'unreachable' ? 'bad' : n.status === 'ready' ? 'good' : ''},
        n.unreachable_since ? `${n.status} since ${time(n.unreachable_since)}` : n.status),
      h('td', {}, String(n.instances)), h('td', {}, used(n, 'memory_mb')), h('td', {}, used(n, 'disk_mb')),
      h('td', {}, used(n, 'cpus')), h('td', {}, n.port_range),
      h('td', {}, n.last_seen ? time(n.last_seen) : '—'), h('td', {}, button));
  }, 'No nodes.');
}

async function cordon(node, action, button) {
  button.disabled = true;
  try {
    await api.post(`/api/admin/nodes/${encodeURIComponent(node.id)}/${action}`);
    say(el['node-action-message'], action === 'cordon' ? `${node.name}: no new servers go there.`
      : `${node.name} takes new servers again.`, 'ok');
    loadNodes();
  } catch (error) {
    say(el['node-action-message'], describe(error), 'error');
    button.disabled = false;
  }
}

function rebuildText(progress) {
  if (!progress || progress.state === 'idle') return '—';
  if (progress.state === 'running') {
    const percent = progress.head ? Math.floor((100 * progress.position) / progress.head) : 0;
    const eta = progress.eta_seconds !== null && progress.eta_seconds !== undefined
      ? `, about ${formatAge(progress.eta_seconds)} left` : '';
    return `Rebuilding: ${progress.position} of ${progress.head} (${percent} %)${eta}`;
  }
  if (progress.state === 'swapping') return 'Swapping in the rebuilt tables…';
  if (progress.state === 'done') return `Rebuilt (${progress.position} events)`;
  if (progress.state === 'failed') return 'Rebuild failed. The live tables were kept; see the server log.';
  return progress.state;
}

async function loadProjections() {
  let running = false;
  await loadInto('projections', '/api/admin/projections', (p) => {
    const progress = p.rebuild || {};
    const active = progress.state === 'running' || progress.state === 'swapping';
    running ||= active;
    const button = h('button', {type: 'button', className: 'small', disabled: active,
      'aria-label': `Rebuild ${p.name}`}, 'Rebuild');
    button.addEventListener('click', () => rebuild(p.name, button));
    return h('tr', {dataset: {name: p.name, rebuild: progress.state || 'idle'}}, h('th', {scope: 'row'}, p.name),
      h('td', {}, String(p.position)), h('td', {}, String(p.lag)),
      h('td', {className: 'rebuild-progress'}, rebuildText(progress)), h('td', {}, button));
  }, 'No projections.');
  clearTimeout(rebuildTimer);
  rebuildTimer = running ? setTimeout(loadProjections, REBUILD_POLL_MS) : null;
}

async function rebuild(name, button) {
  button.disabled = true;
  say(el['rebuild-message'], `Starting the rebuild of ${name}…`);
  try {
    await api.post(`/api/admin/projections/${encodeURIComponent(name)}/rebuild`);
    say(el['rebuild-message'], `Rebuilding ${name}; the live tables keep serving meanwhile.`, 'ok');
  } catch (error) {
    say(el['rebuild-message'], describe(error), 'error');
  }
  await loadProjections();
}

// --- Audit -----------------------------------------------------------------------------------

function streamId() {
  return document.getElementById('audit-stream').value.trim();
}

async function loadStream(event) {
  event.preventDefault();
  const id = streamId();
  say(el['audit-message'], 'Loading…');
  try {
    const stream = await api.get(`/api/admin/streams/${encodeURIComponent(id)}/events`);
    fill(el['audit-table'], stream.events.map((e) => h('tr', {}, h('td', {}, String(e.version)),
      h('td', {}, e.type), h('td', {}, time(e.timestamp)),
      h('td', {}, h('details', {}, h('summary', {}, 'data'), h('pre', {}, JSON.stringify(e.data, null, 2)))))));
    say(el['audit-message'], `${stream.events.length} events, oldest first.`, 'ok');
  } catch (error) {
    fill(el['audit-table']);
    say(el['audit-message'], describe(error), 'error');
  }
}

async function verifyStream() {
  const id = streamId();
  if (!id) {
    say(el['audit-message'], 'Enter a stream id first.', 'error');
    return;
  }
  say(el['audit-message'], 'Verifying…');
  try {
    const result = await api.get(`/api/admin/streams/${encodeURIComponent(id)}/verify`);
    const text = result.ok
      ? `Chain intact: ${result.checked} events verified.`
      : `Chain ${result.status}: ${result.detail || result.reason || 'it does not verify'}`
        + (result.first_broken_version ? ` (first broken version ${result.first_broken_version})` : '');
    say(el['audit-message'], text, result.ok ? 'ok' : 'error');
  } catch (error) {
    const text = error.status === 405
      ? `This server cannot verify chains over HTTP; run: zlh audit stream ${id} --verify`
      : describe(error);
    say(el['audit-message'], text, 'error');
  }
}

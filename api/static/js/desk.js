// The staff ticket desk (operators only): tickets by status and search, paged by the server; one ticket with
// its whole conversation, reply, internal notes, assignment, close and reopen; triage diagnostics computed
// when the ticket opens; and the mail that matched no ticket.

import {api} from './api.js';
import {describe} from './errors.js';
import {STATUS_LABELS, conversation, download, uploadFiles} from './tickets.js';
import {fill, h, say, time} from './ui.js';

const PAGE = 25;
const el = {};
let cursor = null;
let staff = [];
let current = null;

function status(id) {
  el[id] = h('p', {className: 'message', id, role: 'status'});
  return el[id];
}

export function setup() {
  const root = document.getElementById('view-desk');
  el.rows = h('tbody');
  el.more = h('button', {type: 'button', id: 'desk-more', hidden: true, onclick: () => load(false)}, 'More tickets');
  el.counts = h('p', {id: 'desk-counts', className: 'muted'});
  el.ticket = h('section', {className: 'panel', id: 'desk-ticket', hidden: true, 'aria-labelledby': 'desk-title'});
  el.mailRows = h('tbody');
  root.replaceChildren(h('h1', {id: 'desk-heading', tabindex: '-1'}, 'Support desk'),
    h('form', {id: 'desk-search', className: 'inline-form', onsubmit: (e) => { e.preventDefault(); load(true); }},
      h('label', {for: 'desk-status'}, 'Status'),
      h('select', {id: 'desk-status', onchange: () => load(true)},
        h('option', {value: ''}, 'All'), Object.entries(STATUS_LABELS).map(([v, t]) => h('option', {value: v}, t))),
      h('label', {for: 'desk-q'}, 'Search tickets'),
      h('input', {id: 'desk-q', type: 'search', placeholder: 'number, email or subject', maxlength: '200'}),
      h('button', {type: 'submit', className: 'primary'}, 'Search')),
    el.counts, status('desk-message'),
    h('div', {className: 'table-wrap'}, h('table', {id: 'desk-table'},
      h('caption', {className: 'visually-hidden'}, 'Tickets'),
      h('thead', {}, h('tr', {}, ['Number', 'Subject', 'Customer', 'Status', 'Assignee', 'Last from', 'Opened']
        .map((c) => h('th', {scope: 'col'}, c)))), el.rows)),
    el.more, el.ticket,
    h('section', {className: 'panel admin-section', id: 'desk-mail', 'aria-labelledby': 'desk-mail-title'},
      h('h2', {id: 'desk-mail-title'}, 'Unmatched mail'),
      h('p', {className: 'muted'}, 'Mail to support that is not a ticket owner’s reply: a stranger’s, an unknown '
        + 'or forged ticket number, another sender, an auto-reply. It is never put on a ticket.'),
      status('desk-mail-message'),
      h('div', {className: 'table-wrap'}, h('table', {id: 'desk-mail-table'},
        h('caption', {className: 'visually-hidden'}, 'Unmatched mail'),
        h('thead', {}, h('tr', {}, ['Received', 'From', 'Subject', 'Why not on a ticket', ''].map((c) =>
          h('th', {scope: 'col'}, c)))), el.mailRows))));
}

export function enter() {
  load(true);
  loadMail();
  api.get('/api/admin/support/staff').then((body) => { staff = body.items; }).catch(() => { staff = []; });
}

export function leave() {
  current = null;
  el.ticket.hidden = true;
}

async function load(fresh) {
  if (fresh) cursor = null;
  const params = new URLSearchParams({limit: String(PAGE)});
  const chosen = document.getElementById('desk-status').value;
  const q = document.getElementById('desk-q').value.trim();
  if (chosen) params.set('status', chosen);
  if (q) params.set('q', q);
  if (!fresh && cursor) params.set('cursor', cursor);
  try {
    const body = await api.get(`/api/admin/support/tickets?${params}`);
    const rows = body.items.map(row);
    if (fresh) fill(el.rows, rows);
    else el.rows.append(...rows);
    cursor = body.next_cursor;
    el.more.hidden = !cursor;
    el.counts.textContent = Object.entries(STATUS_LABELS).map(([k, t]) => `${t}: ${body.counts[k] ?? 0}`).join(' · ');
    say(el['desk-message'], el.rows.children.length ? '' : 'No tickets match.');
  } catch (error) {
    say(el['desk-message'], describe(error), 'error');
  }
}

function staffEmail(id) {
  return (staff.find((s) => s.id === id) || {}).email || (id ? 'someone' : '—');
}

function row(t) {
  return h('tr', {dataset: {number: t.number, status: t.status}},
    h('td', {}, h('button', {type: 'button', className: 'link', 'aria-label': `Open ticket ${t.number}`,
      onclick: () => openTicket(t.id)}, h('code', {}, t.number))),
    h('td', {}, t.subject), h('td', {}, t.email), h('td', {}, STATUS_LABELS[t.status] || t.status),
    h('td', {}, staffEmail(t.assignee_id)), h('td', {}, t.last_from), h('td', {}, time(t.created_at)));
}

async function openTicket(id) {
  current = id;
  el.ticket.hidden = false;
  fill(el.ticket, h('p', {className: 'message'}, 'Loading…'));
  try {
    render(await api.get(`/api/admin/support/tickets/${encodeURIComponent(id)}`));
  } catch (error) {
    fill(el.ticket, h('p', {className: 'message', dataset: {kind: 'error'}}, describe(error)));
    return;
  }
  loadTriage(id);
}

async function act(path, options, message) {
  const line = document.getElementById('desk-ticket-message');
  say(line, 'Saving…');
  try {
    const ticket = await api.post(path, options);
    render(ticket);
    say(document.getElementById('desk-ticket-message'), message, 'ok');
    loadTriage(ticket.id);
    load(true);
  } catch (error) {
    say(line, describe(error), 'error');
  }
}

function render(ticket) {
  const base = `/api/admin/support/tickets/${encodeURIComponent(ticket.id)}`;
  const line = h('p', {className: 'message', id: 'desk-ticket-message', role: 'status'});
  const assignee = h('select', {id: 'desk-assignee'}, h('option', {value: ''}, 'Nobody'),
    staff.map((s) => h('option', {value: s.id, selected: ticket.assignee && ticket.assignee.id === s.id}, s.email)));
  const body = h('textarea', {id: 'desk-reply-body', rows: '4', maxlength: '10000'});
  const files = h('input', {id: 'desk-reply-files', type: 'file', multiple: true});
  const send = async (kind) => {
    const text = body.value.trim();
    if (!text) {
      say(line, 'Write something first.', 'error');
      return;
    }
    try {
      const attachments = await uploadFiles(files, (t) => say(line, t));
      if (kind === 'note') await act(`${base}/notes`, {json: {note: text, attachments}}, 'Internal note added.');
      else await act(`${base}/reply`, {json: {message: text, attachments}}, 'Reply sent to the customer.');
    } catch (error) {
      say(line, describe(error), 'error');
    }
  };
  const closed = ticket.status === 'closed';
  fill(el.ticket,
    h('div', {className: 'toolbar'}, h('h2', {id: 'desk-title'}, `${ticket.number}: ${ticket.subject}`),
      h('button', {type: 'button', className: 'quiet', onclick: leave}, 'Close panel')),
    h('p', {id: 'desk-ticket-status'}, `Status: ${STATUS_LABELS[ticket.status] || ticket.status} · Customer: `,
      h('strong', {}, ticket.email), ticket.helpdesk && Object.keys(ticket.helpdesk).length
        ? ` · Helpdesk: ${Object.entries(ticket.helpdesk).map(([k, v]) => `${k} #${v}`).join(', ')}` : ''),
    h('div', {className: 'inline-form'},
      h('label', {for: 'desk-assignee'}, 'Assignee'), assignee,
      h('button', {type: 'button', onclick: () => act(`${base}/assign`, {json: {assignee_id: assignee.value || null}},
        'Assignment saved.')}, 'Assign'),
      closed
        ? h('button', {type: 'button', onclick: () => act(`${base}/reopen`, {}, 'Ticket reopened.')}, 'Reopen ticket')
        : h('button', {type: 'button', className: 'danger', onclick: () => act(`${base}/close`, {}, 'Ticket closed.')},
          'Close ticket')),
    line,
    h('section', {id: 'desk-triage', className: 'triage', 'aria-label': 'Triage'},
      h('h3', {}, 'Triage'), h('p', {className: 'muted'}, 'Computing…')),
    h('h3', {}, 'Conversation'),
    conversation(ticket.id, ticket.messages, {staffView: true, onError: (e) => say(line, describe(e), 'error')}),
    h('form', {id: 'desk-reply-form', onsubmit: (e) => { e.preventDefault(); send('reply'); }},
      h('label', {for: 'desk-reply-body'}, 'Reply or internal note'), body,
      h('label', {for: 'desk-reply-files'}, 'Attach files (up to 10 MiB each)'), files,
      h('div', {className: 'buttons'},
        h('button', {type: 'submit', className: 'primary', disabled: closed}, 'Send reply'),
        h('button', {type: 'button', onclick: () => send('note')}, 'Add internal note')),
      closed ? h('p', {className: 'muted'}, 'Reopen the ticket to reply; notes can still be added.') : null));
}

async function loadTriage(id) {
  try {
    const t = await api.get(`/api/admin/support/tickets/${encodeURIComponent(id)}/triage`);
    if (current !== id) return;
    const box = document.getElementById('desk-triage');
    const inst = t.instance;
    const items = [
      ['Billing', `${t.customer.billing.state}${t.customer.billing.since ? ` since ${t.customer.billing.since}` : ''}`],
      ['Customer’s servers', t.customer.instances.map((i) => `${i.name} (${i.status})`).join(', ') || 'none'],
    ];
    if (inst) {
      items.push(['Server', `${inst.name || inst.id}: ${inst.status}`], ['Address', inst.address || '—'],
        ['Node', t.node ? t.node.name : `not recorded (${t.node_note})`],
        ['Drift', t.drift ? t.drift.findings.map((f) => `${f.kind}: ${f.detail}`).join('; ') : 'none'],
        ['Repairs', t.repairs.map((r) => `${r.kind} ${r.status}${r.reason ? ` (${r.reason})` : ''}`).join('; ')
          || 'none']);
    }
    fill(box, h('h3', {}, 'Triage'), h('dl', {className: 'triage-list'},
      items.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
    inst ? h('details', {}, h('summary', {}, `Last operations (${t.operations.length})`),
      h('ul', {}, t.operations.map((o) => h('li', {}, `${o.kind}: ${o.phase}`,
        o.error ? ` — ${o.error.code}: ${o.error.message}` : '', ' · ', time(o.created_at))))) : null,
    inst && t.console ? h('details', {id: 'desk-console'}, h('summary', {}, 'Recent console lines (staff only)'),
      t.console.error ? h('p', {className: 'muted'}, t.console.error)
        : h('pre', {className: 'console-out'}, t.console.lines.join('\n') || '(no output)')) : null);
  } catch (error) {
    const box = document.getElementById('desk-triage');
    if (box) fill(box, h('h3', {}, 'Triage'), h('p', {className: 'message', dataset: {kind: 'error'}},
      describe(error)));
  }
}

const REASONS = {no_ticket_address: 'not sent to a ticket address', unknown_ticket: 'unknown or forged ticket number',
  sender_mismatch: 'sender is not the ticket’s owner', authentication_failed: 'sender authentication failed',
  auto_reply: 'automatic reply', ticket_unavailable: 'the ticket could not take it'};

async function loadMail() {
  try {
    const {items} = await api.get('/api/admin/support/mail');
    fill(el.mailRows, items.map((m) => h('tr', {dataset: {reason: m.reason || ''}},
      h('td', {}, time(m.received_at)), h('td', {}, m.from_address), h('td', {}, m.subject),
      h('td', {}, REASONS[m.reason] || m.reason), h('td', {className: 'row-actions'},
        h('button', {type: 'button', className: 'small', onclick: () =>
          download(`/api/admin/support/mail/${m.id}/raw`, `${m.id}.eml`).catch((e) =>
            say(el['desk-mail-message'], describe(e), 'error'))}, 'Download .eml'),
        h('button', {type: 'button', className: 'small', onclick: async () => {
          try {
            await api.post(`/api/admin/support/mail/${m.id}/dismiss`);
            loadMail();
          } catch (error) {
            say(el['desk-mail-message'], describe(error), 'error');
          }
        }}, 'Dismiss')))));
    say(el['desk-mail-message'], items.length ? '' : 'No unmatched mail.');
  } catch (error) {
    say(el['desk-mail-message'], describe(error), 'error');
  }
}

// Support: open a ticket (optionally about one server, with attachments), list mine, and read and answer one.
// Staff replies are signed "ZLH Support"; internal notes never reach this page (the API does not send them).

import {api} from './api.js';
import {describe} from './errors.js';
import * as servers from './servers.js';
import {STATUS_LABELS, conversation, uploadFiles} from './tickets.js';
import {fill, h, say, time} from './ui.js';

let root;
let form;
let message;
let list;
let instanceSelect;
let detail;
let current = null;
let sending = false;

export function setup() {
  root = document.getElementById('view-support');
  message = h('p', {className: 'message', id: 'support-message', role: 'status'});
  instanceSelect = h('select', {id: 'support-instance', name: 'instance_id'});
  form = h('form', {className: 'panel', id: 'support-form', onsubmit: submit},
    h('h2', {}, 'Open a ticket'),
    h('label', {for: 'support-subject'}, 'Subject'),
    h('input', {id: 'support-subject', name: 'subject', required: true, maxlength: '200'}),
    h('label', {for: 'support-instance'}, 'About server (optional)'), instanceSelect,
    h('label', {for: 'support-body'}, 'Message'),
    h('textarea', {id: 'support-body', name: 'message', rows: '5', required: true, maxlength: '10000'}),
    h('label', {for: 'support-files'}, 'Attachments (optional, up to 10 MiB each)'),
    h('input', {id: 'support-files', type: 'file', multiple: true}),
    h('div', {className: 'buttons'}, h('button', {type: 'submit', className: 'primary'}, 'Send ticket')),
    message);
  list = h('tbody');
  detail = h('section', {className: 'panel', id: 'ticket-detail', hidden: true, 'aria-labelledby': 'ticket-title'});
  root.replaceChildren(h('h1', {id: 'support-title', tabindex: '-1'}, 'Support'), form,
    h('h2', {}, 'My tickets'), h('p', {id: 'tickets-message', className: 'message', role: 'status'}),
    h('div', {className: 'table-wrap'}, h('table', {id: 'tickets'},
      h('caption', {className: 'visually-hidden'}, 'My tickets'),
      h('thead', {}, h('tr', {}, ...['Number', 'Subject', 'Status', 'Replies', 'Opened'].map((title) =>
        h('th', {scope: 'col'}, title)))), list)), detail);
}

export async function enter() {
  load();
  let items = servers.known();
  try {
    items = (await api.get('/api/instances')).items;
  } catch {
    // the list of servers is optional here; the form works without it
  }
  fill(instanceSelect, h('option', {value: ''}, 'No particular server'),
    items.map((i) => h('option', {value: i.id}, i.name)));
}

export function leave() {
  current = null;
  detail.hidden = true;
}

async function load() {
  const status = document.getElementById('tickets-message');
  try {
    const {items} = await api.get('/api/support/tickets');
    fill(list, items.map((t) => h('tr', {dataset: {number: t.number}},
      h('td', {}, h('button', {type: 'button', className: 'link', onclick: () => openTicket(t.id),
        'aria-label': `Open ticket ${t.number}`}, h('code', {}, t.number))),
      h('td', {}, t.subject), h('td', {}, STATUS_LABELS[t.status] || t.status), h('td', {}, String(t.replies)),
      h('td', {}, time(t.created_at)))));
    say(status, items.length ? '' : 'You have not opened any tickets.');
  } catch (error) {
    say(status, `Your tickets could not be loaded. ${describe(error)}`, 'error');
  }
}

async function submit(event) {
  event.preventDefault();
  if (sending) return;
  const data = new FormData(form);
  const subject = String(data.get('subject')).trim();
  const text = String(data.get('message')).trim();
  if (!subject || !text) {
    say(message, 'Enter a subject and a message.', 'error');
    return;
  }
  sending = true;
  say(message, 'Sending…');
  try {
    const attachments = await uploadFiles(document.getElementById('support-files'), (t) => say(message, t));
    const ticket = await api.post('/api/support/create', {json: {subject, message: text,
      instance_id: data.get('instance_id') || null, attachments}});
    form.reset();
    say(message, `Ticket ${ticket.number} opened (status: ${ticket.status}). We will answer by email; `
      + 'reply to our email or here.', 'ok');
    await load();
  } catch (error) {
    say(message, describe(error), 'error');
  } finally {
    sending = false;
  }
}

async function openTicket(id) {
  current = id;
  detail.hidden = false;
  fill(detail, h('p', {className: 'message'}, 'Loading…'));
  try {
    render(await api.get(`/api/support/tickets/${encodeURIComponent(id)}`));
  } catch (error) {
    fill(detail, h('p', {className: 'message', dataset: {kind: 'error'}}, describe(error)));
  }
}

function render(ticket) {
  const status = h('p', {className: 'message', id: 'ticket-reply-message', role: 'status'});
  const body = h('textarea', {id: 'ticket-reply-body', rows: '4', required: true, maxlength: '10000'});
  const files = h('input', {id: 'ticket-reply-files', type: 'file', multiple: true});
  const replyForm = h('form', {id: 'ticket-reply-form', onsubmit: async (event) => {
    event.preventDefault();
    const text = body.value.trim();
    if (!text) {
      say(status, 'Write a message first.', 'error');
      return;
    }
    say(status, 'Sending…');
    try {
      const attachments = await uploadFiles(files, (t) => say(status, t));
      render(await api.post(`/api/support/tickets/${encodeURIComponent(ticket.id)}/reply`,
        {json: {message: text, attachments}}));
      say(document.getElementById('ticket-reply-message'), 'Reply sent.', 'ok');
      load();
    } catch (error) {
      say(status, describe(error), 'error');
    }
  }},
  h('label', {for: 'ticket-reply-body'}, ticket.status === 'closed' ? 'Reply (reopens the ticket)' : 'Reply'),
  body, h('label', {for: 'ticket-reply-files'}, 'Attachments (optional, up to 10 MiB each)'), files,
  h('div', {className: 'buttons'}, h('button', {type: 'submit', className: 'primary'}, 'Send reply')), status);
  fill(detail,
    h('div', {className: 'toolbar'}, h('h2', {id: 'ticket-title'}, `${ticket.number}: ${ticket.subject}`),
      h('button', {type: 'button', className: 'quiet', onclick: leave}, 'Close')),
    h('p', {id: 'ticket-status'}, `Status: ${STATUS_LABELS[ticket.status] || ticket.status}`),
    conversation(ticket.id, ticket.messages, {onError: (e) => say(status, describe(e), 'error')}),
    replyForm);
  if (current !== ticket.id) current = ticket.id;
}

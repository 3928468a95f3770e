// Support: open a ticket (optionally about one server), see its number and status, list mine.

import {api} from './api.js';
import {describe} from './errors.js';
import * as servers from './servers.js';
import {fill, h, say, time} from './ui.js';

let root;
let form;
let message;
let list;
let instanceSelect;
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
    h('div', {className: 'buttons'}, h('button', {type: 'submit', className: 'primary'}, 'Send ticket')),
    message);
  list = h('tbody');
  root.replaceChildren(h('h1', {id: 'support-title', tabindex: '-1'}, 'Support'), form,
    h('h2', {}, 'My tickets'), h('p', {id: 'tickets-message', className: 'message', role: 'status'}),
    h('div', {className: 'table-wrap'}, h('table', {id: 'tickets'},
      h('caption', {className: 'visually-hidden'}, 'My tickets'),
      h('thead', {}, h('tr', {}, ...['Number', 'Subject', 'Status', 'Replies', 'Opened'].map((title) =>
        h('th', {scope: 'col'}, title)))), list)));
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

async function load() {
  const status = document.getElementById('tickets-message');
  try {
    const {items} = await api.get('/api/support/tickets');
    fill(list, items.map((t) => h('tr', {dataset: {number: t.number}}, h('td', {}, h('code', {}, t.number)),
      h('td', {}, t.subject), h('td', {}, t.status), h('td', {}, String(t.replies)), h('td', {}, time(t.created_at)))));
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
    const ticket = await api.post('/api/support/create', {json: {subject, message: text,
      instance_id: data.get('instance_id') || null}});
    form.reset();
    say(message, `Ticket ${ticket.number} opened (status: ${ticket.status}). We will answer by email.`, 'ok');
    await load();
  } catch (error) {
    say(message, describe(error), 'error');
  } finally {
    sending = false;
  }
}

// What the customer's support page and the staff desk share: a conversation, attachments (upload before
// sending, download as a file), and the sentences for ticket statuses.

import {api} from './api.js';
import {formatBytes, h, time} from './ui.js';

export const MAX_ATTACHMENT = 10 * 1024 * 1024;
export const STATUS_LABELS = {open: 'Open', waiting_on_customer: 'Waiting on customer', closed: 'Closed'};

/** Uploads the files of an <input type=file>; resolves with their upload ids. Rejects on the first refusal. */
export async function uploadFiles(input, onProgress = () => {}) {
  const ids = [];
  for (const file of input.files || []) {
    if (file.size > MAX_ATTACHMENT) {
      const error = new Error(`${file.name} is larger than 10 MiB.`);
      error.code = 'too_large';
      error.status = 413;
      throw error;
    }
    onProgress(`Uploading ${file.name}…`);
    const uploaded = await api.post(`/api/support/attachments?name=${encodeURIComponent(file.name)}`,
      {body: file, headers: {'Content-Type': 'application/octet-stream'}});
    ids.push(uploaded.id);
  }
  return ids;
}

/** Downloads one attachment of a ticket (the token travels in a header, so not a plain link). */
export async function download(path, name) {
  const bytes = await api.get(path, {as: 'bytes'});
  const url = URL.createObjectURL(new Blob([bytes], {type: 'application/octet-stream'}));
  const link = h('a', {href: url, download: name || 'attachment'});
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function attachmentList(ticketId, attachments, onError) {
  if (!attachments || !attachments.length) return null;
  return h('ul', {className: 'attachments'}, attachments.map((a) => h('li', {},
    h('button', {type: 'button', className: 'link', 'aria-label': `Download ${a.name}`, onclick: () =>
      download(`/api/support/tickets/${encodeURIComponent(ticketId)}/attachments/${a.sha256}`, a.name)
        .catch(onError)}, a.name),
    ` (${a.content_type}, ${formatBytes(a.size)})`)));
}

function authorName(author, staffView) {
  if (author.staff) return staffView && author.email ? `${author.email} (staff)` : 'ZLH Support';
  return staffView ? (author.email || 'Customer') : 'You';
}

/** The conversation as an ordered list; notes and status changes only appear in the staff view. */
export function conversation(ticketId, messages, {staffView = false, onError = () => {}} = {}) {
  return h('ol', {className: 'conversation'}, messages.map((m) => {
    if (m.kind === 'event') {
      return h('li', {className: 'conv-event', dataset: {kind: 'event'}},
        h('span', {}, `${m.author.email || 'staff'}: ${m.detail} · `), time(m.at));
    }
    const note = m.kind === 'note';
    return h('li', {className: note ? 'conv-note' : (m.author.staff ? 'conv-staff' : 'conv-customer'),
      dataset: {kind: m.kind}},
      h('div', {className: 'conv-head'},
        h('strong', {}, note ? `Internal note · ${m.author.email || 'staff'}` : authorName(m.author, staffView)),
        m.via && m.via !== 'portal' ? h('span', {className: 'badge'}, `via ${m.via}`) : null,
        time(m.at)),
      h('p', {className: 'conv-body'}, m.message),
      attachmentList(ticketId, m.attachments, onError));
  }));
}

// Announcements: global ones and those addressed to the caller, newest first.

import {api} from './api.js';
import {describe} from './errors.js';
import {fill, h, time} from './ui.js';

const REFRESH_MS = 60000;
let timer = null;

export async function refresh() {
  const section = document.getElementById('announcements');
  try {
    const {items} = await api.get('/api/announcements');
    section.hidden = items.length === 0;
    fill(section, h('h2', {className: 'visually-hidden'}, 'Announcements'), items.map((item) =>
      h('article', {className: `announcement level-${item.level}`, dataset: {level: item.level}},
        h('h3', {}, item.title), h('p', {}, item.body), h('p', {className: 'muted'}, time(item.created_at)))));
  } catch (error) {
    if (error.status === 401) return;
    section.hidden = false;
    fill(section, h('p', {className: 'message', dataset: {kind: 'error'}},
      `Announcements could not be loaded. ${describe(error)}`));
  }
}

export function start() {
  stop();
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
}

export function stop() {
  clearInterval(timer);
  timer = null;
  fill(document.getElementById('announcements'));
}

// Live stats: the player count on a game server's card, and on the server's page small charts of CPU, memory and
// players (the last 15 minutes, sampled by the node every 5 s), its disk use against its quota, and why its server
// last ended. Charts are plain SVG built here (no library, nothing from another origin: the CSP is default-src 'self').

import {api} from './api.js';
import {h} from './ui.js';

const SVG = 'http://www.w3.org/2000/svg';
const POLL_MS = 5000;
const WIDTH = 240;
const HEIGHT = 56;
const EXIT_REASONS = {
  out_of_memory: 'The server was stopped by the system because it used more memory than its limit allows.',
  killed: 'The server was ended by a signal.',
  exited: 'The server exited on its own.',
};

/** GET /api/instances/{id}/stats, or null if it cannot be had right now. */
export async function fetchStats(instanceId) {
  try {
    return await api.get(`/api/instances/${encodeURIComponent(instanceId)}/stats`);
  } catch {
    return null;
  }
}

/** "3 / 20 players" for a sample of a game server; '' when the figures are unknown. */
export function playersText(sample) {
  if (!sample || sample.players_online === null || sample.players_online === undefined) return '';
  const max = sample.players_max ?? '?';
  return `${sample.players_online} / ${max} player${max === 1 ? '' : 's'}`;
}

export function bytesText(bytes) {
  if (bytes === null || bytes === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value >= 100 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

function svg(tag, attributes = {}) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  return element;
}

/** One small chart: a title with the latest figure, and a polyline of the history. */
class Chart {
  constructor(title, key, format, ceiling = () => null) {
    this.key = key;
    this.format = format;
    this.ceilingOf = ceiling; // (current sample) → the chart's top value, when it has a natural one
    this.value = h('span', {className: 'chart-value'}, '—');
    this.line = svg('polyline', {class: 'chart-line', fill: 'none', points: ''});
    this.area = svg('polygon', {class: 'chart-area', points: ''});
    this.ceiling = svg('text', {class: 'chart-axis', x: 2, y: 10});
    const graphic = svg('svg', {viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: 'none', role: 'img',
      'aria-label': `${title} over the last 15 minutes`});
    graphic.append(svg('line', {class: 'chart-base', x1: 0, y1: HEIGHT - 0.5, x2: WIDTH, y2: HEIGHT - 0.5}),
      this.area, this.line, this.ceiling);
    this.root = h('figure', {className: 'chart', dataset: {metric: key}},
      h('figcaption', {}, h('span', {}, title), this.value), graphic);
  }

  update(history, current) {
    const values = history.map((s) => s[this.key]).filter((v) => v !== null && v !== undefined);
    const latest = current ? current[this.key] : null;
    this.value.textContent = latest === null || latest === undefined ? '—' : this.format(latest, current);
    const max = Math.max(this.ceilingOf(current) ?? 0, ...values, 1);
    this.ceiling.textContent = this.format(max, current);
    if (values.length === 0) {
      this.line.setAttribute('points', '');
      this.area.setAttribute('points', '');
      this.root.dataset.points = '0';
      return;
    }
    const step = values.length > 1 ? WIDTH / (values.length - 1) : 0;
    const points = values.map((v, i) => `${(i * step).toFixed(1)},${(HEIGHT - 2 - (v / max) * (HEIGHT - 14)).toFixed(1)}`);
    if (points.length === 1) points.push(`${WIDTH},${points[0].split(',')[1]}`);
    this.line.setAttribute('points', points.join(' '));
    this.area.setAttribute('points', `0,${HEIGHT} ${points.join(' ')} ${WIDTH},${HEIGHT}`);
    this.root.dataset.points = String(values.length);
  }
}

/** The stats strip of the server's page: charts, disk use, last exit. Polls while attached. */
export class StatsView {
  constructor(root) {
    this.root = root;
    this.instance = null;
    this.timer = null;
    this.generation = 0;
    this.cpu = new Chart('CPU', 'cpu_percent', (v) => `${Number(v).toFixed(v >= 10 ? 0 : 1)} %`);
    this.memory = new Chart('Memory', 'memory_bytes', (v) => bytesText(v));
    this.players = new Chart('Players', 'players_online', (v, current) => (current && current.players_max !== null
      && current.players_max !== undefined ? `${v} / ${current.players_max}` : String(v)),
    (current) => current?.players_max ?? null);
    this.disk = h('p', {className: 'stats-disk muted'});
    this.exit = h('p', {className: 'stats-exit', role: 'status'});
    this.state = h('p', {className: 'stats-state muted'});
    this.charts = h('div', {className: 'charts'}, this.cpu.root, this.memory.root, this.players.root);
    root.replaceChildren(h('h3', {}, 'Live stats'), this.state, this.charts, this.disk, this.exit);
  }

  attach(instance) {
    const changed = !this.instance || this.instance.id !== instance.id;
    const statusChanged = this.instance && this.instance.status !== instance.status;
    this.instance = instance;
    this.players.root.hidden = instance.kind !== 'game';
    if (changed || statusChanged) this.load();
  }

  detach() {
    clearTimeout(this.timer);
    this.timer = null;
    this.instance = null;
    this.generation += 1;
  }

  async load() {
    clearTimeout(this.timer);
    const generation = ++this.generation;
    const instance = this.instance;
    if (!instance) return;
    const stats = await fetchStats(instance.id);
    if (generation !== this.generation) return;
    this.render(stats);
    this.timer = setTimeout(() => this.load(), POLL_MS);
  }

  render(stats) {
    if (!stats) {
      this.state.textContent = 'Live stats cannot be loaded right now.';
      return;
    }
    const history = stats.history || [];
    this.state.textContent = stats.current ? `The last 15 minutes · latest sample at ${new Date(stats.current.sampled_at)
      .toLocaleTimeString()}` : 'The server is not running: no live figures.';
    for (const chart of [this.cpu, this.memory, this.players]) chart.update(history, stats.current);
    const quota = stats.disk_quota_bytes;
    this.disk.textContent = `Disk: ${bytesText(stats.disk_bytes)}${quota ? ` of ${bytesText(quota)}` : ''}`
      + (stats.limits ? ` · Memory limit ${stats.limits.memory_mb} MiB · ${stats.limits.cpus} CPU` : '')
      + (stats.limits_enforced === false ? ' (not enforced on this node)' : '');
    const reason = stats.last_exit?.reason;
    this.exit.textContent = reason && reason !== 'stopped' ? (EXIT_REASONS[reason] || `The server ended: ${reason}.`) : '';
    this.exit.dataset.kind = reason === 'out_of_memory' ? 'error' : 'info';
  }
}

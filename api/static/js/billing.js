// The billing banner: GET /api/billing says where the account stands in the non-payment policy
// (warned → final warning → suspended); a 402 from any route shows the same banner.

import {api} from './api.js';
import {describe} from './errors.js';
import {formatDate} from './ui.js';

const REFRESH_MS = 30000;
let timer = null;
let lastState = 'good_standing';

const STATES = {
  warned: {
    title: 'Your last payment failed',
    text: (next) => 'We could not collect your last payment. Please update your payment method. Your servers keep '
      + 'running. ' + (next ? `If the invoice is still unpaid on ${next}, new backups are paused (final notice).`
      : 'If the invoice stays unpaid, new backups are paused at the final notice.'),
    blocked: 'Nothing is blocked yet.',
  },
  final_warning: {
    title: 'Final notice: your invoice is still unpaid',
    text: (next) => 'Your invoice is still unpaid. Please pay it. '
      + (next ? `If it is still unpaid on ${next}, your servers will be stopped (never deleted) until it is paid.`
        : 'If it stays unpaid, your servers will be stopped (never deleted) until it is paid.'),
    blocked: 'Paused now: new backups. Existing backups are kept; your servers and files are untouched.',
  },
  suspended: {
    title: 'Your account is suspended for non-payment',
    text: () => 'Your servers are stopped. Files, backups and addresses are kept: nothing is deleted for '
      + 'non-payment. Once the invoice is paid, the servers we stopped start again by themselves.',
    blocked: 'Blocked: creating, starting and restoring servers, changing files and new backups. '
      + 'Still possible: viewing, stopping servers, downloading files and contacting support.',
  },
};

function render(state, nextStepAt) {
  const banner = document.getElementById('billing-banner');
  const info = STATES[state];
  lastState = state;
  if (!info) {
    banner.hidden = true;
    delete banner.dataset.state;
    return;
  }
  banner.dataset.state = state;
  document.getElementById('billing-title').textContent = info.title;
  document.getElementById('billing-text').textContent = info.text(nextStepAt ? formatDate(nextStepAt) : '');
  document.getElementById('billing-blocked').textContent = info.blocked;
  banner.hidden = false;
}

export async function refresh() {
  try {
    const account = await api.get('/api/billing');
    render(account.state, account.next_step_at);
  } catch (error) {
    if (error.status === 404) return; // this server has no billing: nothing to show
    if (error.status === 401) return; // handled by the sign-out path
    const banner = document.getElementById('billing-banner');
    if (lastState === 'good_standing') {
      banner.dataset.state = 'unknown';
      document.getElementById('billing-title').textContent = 'Billing status unavailable';
      document.getElementById('billing-text').textContent = describe(error);
      document.getElementById('billing-blocked').textContent = '';
      banner.hidden = false;
    }
  }
}

/** A 402 answer: show the banner for it at once, then ask for the full status. */
export function blocked(error) {
  if (error.code === 'billing_suspended') render('suspended', null);
  else if (error.code === 'backups_blocked' && lastState !== 'suspended') render('final_warning', null);
  refresh();
}

export function start() {
  stop();
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
}

export function stop() {
  clearInterval(timer);
  timer = null;
  lastState = 'good_standing';
  render('good_standing');
}

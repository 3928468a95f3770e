// Every API error as a human sentence, derived from the problem document's stable `code`.
// This is the one table: modules never show a raw detail on its own.

const MESSAGES = {
  // Reaching the service, signing in.
  network_error: 'The service could not be reached. Check your connection and try again.',
  unauthorized: 'That token was not accepted. Check it, or ask your operator for a new one, and sign in again.',
  forbidden: 'This part of the portal is for operators only.',
  not_found: 'That no longer exists, or it is not yours.',
  method_not_allowed: 'This server does not offer that action.',
  rate_limited: 'Too many requests in a minute. Wait a moment and try again.',
  insufficient_scope: 'This token can only read. Sign in with a full token to change anything.',
  internal: 'Something went wrong on our side. It has been logged; please try again.',
  store_unavailable: 'The service is briefly unavailable. Please try again in a few seconds.',
  unavailable: 'The service is briefly unavailable. Please try again in a few seconds.',
  bad_gateway: 'The service could not reach the machine your server runs on. Please try again.',
  gateway_timeout: 'The machine your server runs on did not answer in time. Please try again.',
  http_error: 'The request could not be completed.',
  bad_request: 'The request was not understood.',
  validation_error: 'Some of the values are not valid',
  // SFTP.
  ssh_key_exists: 'That key is already on your account.',
  // Servers.
  name_taken: 'You already have a server with that name. Choose another name.',
  unknown_template: 'That template is not available for this kind of server.',
  idempotency_key_reused: 'This form was already sent with different values. Close it and open a new one.',
  idempotency_key_missing: 'The request was missing its Idempotency-Key. Reload the page and try again.',
  idempotency_key_invalid: 'The request carried an invalid Idempotency-Key. Reload the page and try again.',
  operation_in_progress: 'Another action is still running on this server. Wait for it to finish, then try again.',
  illegal_transition: 'That action is not possible in the server’s current state.',
  conflict: 'That action is not possible right now.',
  instance_not_running: 'The console needs a running server. Start the server first.',
  not_running: 'The server is not running.',
  still_running: 'Stop the server first.',
  operation_not_claimable: 'That action could not be started. Please try again.',
  interrupted: 'The action was interrupted. You can delete the server or try again.',
  // What the machine reported while running an action.
  not_connectable: 'The server started but did not accept connections in time.',
  process_exited: 'The server process exited while starting.',
  out_of_memory: 'The server used more memory than its limit allows and was stopped by the system.',
  no_free_port: 'No network port was free on the machine. Please try again later.',
  spawn_failed: 'The server process could not be started.',
  stop_failed: 'The server could not be stopped.',
  backup_failed: 'The backup could not be made.',
  bad_archive: 'That backup is damaged and cannot be restored.',
  checksum_mismatch: 'That backup does not match the checksum recorded when it was made, so it was not '
    + 'restored: your server’s files are untouched.',
  offsite_failed: 'The backup could not be moved to or from offsite storage. Please try again later.',
  agent_timeout: 'The machine your server runs on did not answer in time. Please try again.',
  agent_error: 'The machine your server runs on reported an error. Please try again.',
  agent_unauthorized: 'The machine your server runs on refused the request. Please contact support.',
  io_error: 'The machine your server runs on could not read or write the files.',
  edge_io_error: 'The address could not be published. Please try again.',
  edge_file_corrupt: 'The address could not be published. Please contact support.',
  fenced_off: 'The action was taken over by another worker. Please refresh.',
  console_busy: 'The console is in use elsewhere. Close it there, then try again.',
  // Files.
  bad_path: 'That path is outside your server’s files. Paths start at / inside the server.',
  is_a_directory: 'That is a folder, not a file.',
  not_a_directory: 'That is a file, not a folder.',
  not_a_file: 'That is not a regular file.',
  too_large: 'That is too large: files are limited to 8 MiB, attachments to 10 MiB and notes to 64 KiB.',
  payload_too_large: 'That is too large: files are limited to 8 MiB.',
  unsupported_media_type: 'That kind of content is not accepted here.',
  // Billing (see the banner for the whole story).
  billing_suspended: 'Your account is suspended for an unpaid invoice: creating, starting, restoring and '
    + 'changing files are blocked until it is paid. Stopping servers and support still work.',
  backups_blocked: 'New backups are blocked while your account has an unpaid invoice past its final warning. '
    + 'Existing backups are kept and can still be restored.',
  destructive_action_rejected: 'Deleting a customer’s data for non-payment is never done automatically.',
  bad_signature: 'The webhook signature was not valid.',
  // Quotas (the sentence names the limit when the answer says which quota it is).
  quota_exceeded: 'You have reached a limit of your account. Delete something you no longer need to make room.',
  bad_cursor: 'The list changed. Reload the page.',
  // Support, notes, announcements.
  attachment_disguised: 'That file’s name promises another kind of file than it holds (an executable named .png, '
    + 'say). Name it for what it is, or zip it, and attach it again.',
  attachment_refused: 'That attachment was not accepted (empty files are not).',
  too_many_attachments: 'A message can carry at most 10 attachments.',
  not_staff: 'Tickets can only be assigned to an operator.',
  duplicate_message: 'That message is on the ticket already.',
  tickets_exhausted: 'Too many tickets were opened today. Please try again tomorrow or email support.',
  version_conflict: 'Your notes were changed elsewhere since you loaded them.',
  precondition_required: 'Reload your notes before saving.',
  bad_if_match: 'Reload your notes before saving.',
  invalid_window: 'The end of the window must come after its start.',
  // Schedules and lists.
  bad_cursor: 'That page of the list is no longer valid. Reload the list.',
  quota_exceeded: 'You have reached a limit (a server has at most 20 schedules). Delete one first.',
  instance_deleted: 'The server was deleted.',
  previous_run_active: 'The previous run of this schedule was still under way.',
  operation_timeout: 'The action did not finish in time; the schedule went on without it.',
  missed: 'The schedule was missed while our scheduler was not running.',
  // Subusers.
  permission_denied: 'The server’s owner has not given you that permission on this server. Ask them for it.',
  subuser_exists: 'That person has access to this server already. Change their permissions in the list instead.',
  // Operators.
  email_taken: 'A user with that email already exists.',
  cannot_disable_self: 'You cannot disable your own account; ask another operator.',
  token_revoked: 'That token was revoked; it never works again.',
  rebuild_in_progress: 'That projection is already being rebuilt.',
};

const QUOTAS = {
  instances: (n) => `You have reached the limit of ${n} servers per account. Delete one to make room.`,
  backups: (n) => `This server has reached the limit of ${n} backups. Delete one to make room.`,
  disk: () => 'This would take the server\'s files over its disk quota. Delete files you no longer need first.',
  tickets: (n) => `You have reached the limit of ${n} new support tickets a day. Reply to an open ticket, `
    + 'or open a new one tomorrow.',
};

/** The sentence for an ApiError (or any error). */
export function describe(error) {
  if (!error) return '';
  const code = error.code || 'internal';
  const quota = code === 'quota_exceeded' && QUOTAS[error.problem?.quota];
  if (quota) return quota(error.problem.limit);
  const sentence = MESSAGES[code];
  if (code === 'validation_error') {
    return error.detail ? `${sentence}: ${error.detail}.` : `${sentence}.`;
  }
  if (sentence) return sentence;
  return `The request failed (${code}). Please try again or contact support.`;
}

/** The sentence for an operation's `error` ({code, message}). */
export function describeOperationError(error) {
  if (!error) return '';
  return MESSAGES[error.code] || `The action failed (${error.code}).`;
}

const CLOSE_REASONS = {
  1000: 'Console closed.',
  1001: 'The console was closed because the page is going away.',
  1006: 'The connection to the console was lost.',
  1011: 'The console failed on the machine your server runs on.',
  4401: 'The console link expired or was already used. Reconnect to get a new one.',
  4403: 'You no longer have the console permission on this server.',
  4404: 'That server no longer exists.',
  4409: 'The server is not running. Start it, then reconnect.',
  4410: 'The server stopped. Start it, then reconnect.',
  4504: 'The machine your server runs on did not answer within 10 seconds.',
};

/** The sentence for a console WebSocket close code. */
export function describeClose(code) {
  return CLOSE_REASONS[code] || `The console closed (code ${code}).`;
}

// Sends the Strava cookies a strava-heatmap server needs to that server: when they change, a couple of
// seconds later, and again every hour and at browser start, so that a server that lost them gets them back.
// Nothing else of the site is sent, and nothing at all while this browser is not logged in to Strava.
'use strict';

const api = globalThis.browser ?? globalThis.chrome;
const NEEDED = ['_strava4_session', 'strava_remember_id', 'strava_remember_token', 'CloudFront-Key-Pair-Id',
                'CloudFront-Policy', 'CloudFront-Signature', '_strava_idcf', '_strava_CloudFront-Expires'];
const DEFAULT_STRAVA = 'https://www.strava.com';
const DEBOUNCE_MS = 2000;  // a login sets several cookies one after the other: one push for all of them
const EVERY_MINUTES = 60;
const BADGE = {ok: ['OK', '#196c2e'], failing: ['!', '#a4161a'], unknown: ['?', '#6b6b6b']};

let pending = null;

async function options() {
  const saved = await api.storage.local.get(['server', 'token', 'strava', 'status', 'sent']);
  return {...saved, strava: saved.strava || DEFAULT_STRAVA};
}

// What the browser's cookie API gives for Strava, only the cookies the server needs.
async function neededCookies(strava) {
  const all = await api.cookies.getAll({url: strava});
  return all.filter((cookie) => NEEDED.includes(cookie.name) && cookie.value);
}

function pushUrl(server) {
  return new URL('browser/cookies', server.endsWith('/') ? server : server + '/').href;
}

// The state of the last attempt, in words, and what the server last said about its cookies.
async function record(previous, attempt) {
  const status = {...attempt, at: new Date().toISOString(), server: attempt.server ?? previous?.server ?? null};
  await api.storage.local.set({status});
  showBadge(status);
  return status;
}

function showBadge(status) {
  if (!api.action?.setBadgeText) return;  // Firefox for Android has no toolbar
  let badge = BADGE.unknown;
  if (['token', 'no-access', 'failed'].includes(status?.kind)) badge = BADGE.failing;
  else if (!['unpaired', 'unreachable'].includes(status?.kind) && status?.server) {
    badge = status.server.ok ? BADGE.ok : BADGE.failing;
  }
  const words = status?.server && !['unpaired', 'unreachable', 'token'].includes(status.kind)
    ? (status.server.ok ? 'the server has working Strava cookies' : `the server has no working Strava cookies: ${status.server.reason}`)
    : status?.text ?? 'not paired yet';
  api.action.setBadgeText({text: badge[0]});
  api.action.setBadgeBackgroundColor({color: badge[1]});
  api.action.setTitle({title: `Strava heatmap cookies: ${words}`});
}

// One push now. ``why`` is "change" for a cookie change, skipped when the same cookies were judged already, and
// "options" when the options were saved: then a browser logged out of Strava checks its pairing with an empty list.
async function push(why) {
  const {server, token, strava, status, sent} = await options();
  if (!server || !token) {
    return record(status, {kind: 'unpaired', text: 'Not paired yet: fill in the server\'s address and its push token.'});
  }
  let cookies;
  try {
    cookies = await neededCookies(strava);
  } catch (error) {
    return record(status, {kind: 'no-access', text: `Cannot read the cookies of ${strava}: save these options again and `
                                                    + `allow the extension to access it (${error.message}).`});
  }
  const loggedIn = cookies.some((cookie) => cookie.name === 'strava_remember_id');
  const loggedOut = `Not logged in to Strava (${strava}) in this browser: nothing was sent. Log in there and the `
                    + 'cookies go to the server by themselves.';
  if (!loggedIn && why !== 'options') return record(status, {kind: 'logged-out', text: loggedOut});
  const body = loggedIn ? JSON.stringify(cookies) : '[]';
  if (why === 'change' && body === sent && ['kept', 'not-kept'].includes(status?.kind)) return status;
  let response;
  try {
    response = await fetch(pushUrl(server), {method: 'POST', body, cache: 'no-store', credentials: 'omit',
                                             headers: {'Authorization': `Bearer ${token}`, 'Content-Type': 'application/json'}});
  } catch (error) {
    return record(status, {kind: 'unreachable', text: `The server ${server} cannot be reached from this browser `
                                                      + `(${error.message}): is the address right, and is it running?`});
  }
  const text = (await response.text()).trim();
  if (response.status === 403) {
    return record(status, {kind: 'token', text: 'The server refused the push token: pair this browser again '
                                                + '(redirector.py pair NAME, or the server\'s status page) and paste the new token.'});
  }
  let answer;
  try {
    answer = JSON.parse(text);
  } catch {
    return record(status, {kind: 'failed', text: `The server answered ${response.status}: ${text.slice(0, 300)}`});
  }
  const state = {ok: answer.ok, reason: answer.reason, expiresAt: answer.expires_at};
  if (!loggedIn) return record(status, {kind: 'logged-out', text: loggedOut, server: state});
  await api.storage.local.set({sent: body});
  return record(status, {kind: answer.kept ? 'kept' : 'not-kept', text: answer.result, server: state});
}

function pushSoon() {
  clearTimeout(pending);
  pending = setTimeout(() => push('change'), DEBOUNCE_MS);
}

async function keepTheAlarm() {
  if (!(await api.alarms.get('push'))) api.alarms.create('push', {periodInMinutes: EVERY_MINUTES});
}

api.cookies.onChanged.addListener(({cookie}) => {
  if (NEEDED.includes(cookie.name)) pushSoon();
});
api.alarms.onAlarm.addListener((alarm) => {
  if (alarm.name === 'push') push('hourly');
});
api.runtime.onStartup.addListener(() => push('start'));
api.runtime.onInstalled.addListener(() => push('install'));
api.runtime.onMessage.addListener((message, sender, reply) => {
  if (message?.push) {
    push('options').then(reply, (error) => reply({kind: 'failed', text: String(error)}));
    return true;  // the reply comes later
  }
  return false;
});
api.action?.onClicked?.addListener(() => api.runtime.openOptionsPage());
keepTheAlarm();
options().then(({status}) => showBadge(status));

// The options page: where the cookies go (the server and its push token) and where they come from (Strava).
'use strict';

const api = globalThis.browser ?? globalThis.chrome;
const FIELDS = ['server', 'token', 'strava'];
const WITHOUT_SERVER = ['unpaired', 'unreachable', 'token'];
const form = document.getElementById('options');
const shown = document.getElementById('state');

function say(text, tone, status) {
  shown.textContent = text;
  shown.className = tone;
  shown.dataset.kind = status?.kind ?? '';
  shown.dataset.at = status?.at ?? '';
}

// The extension's state in words: paired or not, the last push and its answer, or what is wrong.
function describe(status, server) {
  if (!status) return say('Not paired yet: fill in the server\'s address and its push token.', '', status);
  const when = new Date(status.at).toLocaleString();
  const known = status.server && !WITHOUT_SERVER.includes(status.kind);
  const lines = [known ? `Paired with ${server}.` : '',
                 ['kept', 'not-kept'].includes(status.kind) ? `Last push ${when}: ${status.text}` : `${when}: ${status.text}`];
  if (known && status.server.ok) {
    lines.push(`The server has working Strava cookies${status.server.expiresAt ? ` (until ${status.server.expiresAt})` : ''}.`);
  } else if (known) {
    lines.push(`The server has no working Strava cookies: ${status.server.reason}.`);
  }
  const failing = ['token', 'no-access', 'failed'].includes(status.kind) || (known && !status.server.ok);
  say(lines.filter(Boolean).join(' '), failing ? 'failing' : known ? 'ok' : '', status);
}

function hostPattern(address) {
  const url = new URL(address);
  return `${url.protocol}//${url.hostname}/*`;
}

async function show() {
  const saved = await api.storage.local.get([...FIELDS, 'status']);
  for (const name of FIELDS) {
    if (saved[name]) form.elements[name].value = saved[name];
  }
  describe(saved.status, saved.server);
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  const values = Object.fromEntries(FIELDS.map((name) => [name, form.elements[name].value.trim()]));
  let origins;
  try {
    new URL(values.server);
    origins = [hostPattern(values.strava)];
  } catch {
    return say('The server\'s and Strava\'s addresses must be whole URLs, e.g. https://heatmap.example.org', 'failing');
  }
  // Firefox grants the access to Strava only on request, and only straight from the click: nothing is awaited before.
  api.permissions.request({origins}).then(async (granted) => {
    if (!granted) {
      return say(`The browser did not give the extension access to ${values.strava}: without it, it cannot read the `
                 + 'Strava cookies. Save again and allow it.', 'failing');
    }
    await api.storage.local.set(values);
    say('Saved; sending the cookies now…', '');
    describe(await api.runtime.sendMessage({push: true}), values.server);
  }, (error) => say(`${values.strava} is not an address this extension may read (${error.message}): it reads the `
                    + 'cookies of strava.com only.', 'failing'));
});

api.storage.onChanged.addListener((changes, area) => {
  if (area === 'local' && changes.status) describe(changes.status.newValue, form.elements.server.value);
});
show();

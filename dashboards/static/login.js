/*
 * dcim sign-in page: posts {user, password} as JSON to /api/login (never as a form, so the
 * password is not left in a URL or the browser's history) and goes to the dashboard.
 */
'use strict';

const form = document.getElementById('login-form');
const message = document.getElementById('login-msg');

function say(text) {
  message.textContent = text;
  message.dataset.kind = 'error';
  message.hidden = !text;
}

async function signIn(event) {
  event.preventDefault();
  const button = document.getElementById('login-submit');
  button.disabled = true;
  say('');
  try {
    const response = await fetch('/api/login', {
      method: 'POST',
      cache: 'no-store',
      headers: {'Content-Type': 'application/json', Accept: 'application/json'},
      body: JSON.stringify({
        user: document.getElementById('login-user').value.trim(),
        password: document.getElementById('login-password').value,
      }),
    });
    if (response.ok) {
      window.location.assign('/');
      return;
    }
    let detail = `HTTP ${response.status}`;
    try {
      const doc = await response.json();
      if (doc && typeof doc.error === 'string') detail = doc.error;
    } catch (err) {
      // not JSON: the status says enough
    }
    const wait = response.headers.get('Retry-After');
    say(wait ? `${detail} (in ${wait} s)` : detail);
    document.getElementById('login-password').value = '';
    document.getElementById('login-password').focus();
  } catch (err) {
    say(`no answer from the dashboard: ${err && err.message ? err.message : err}`);
  } finally {
    button.disabled = false;
  }
}

form.addEventListener('submit', signIn);
document.getElementById('login-submit').disabled = false;
document.getElementById('login-user').focus();

// Log-in: the API token (`diskless api token` prints it). It is kept in
// sessionStorage, so it lasts as long as this tab and is gone when it closes.

import { field, h } from '../dom.js';

export function mountLogin(ctx, { message }) {
  const input = h('input', { type: 'password', name: 'token', autocomplete: 'off', spellcheck: 'false', required: true, size: '40' });
  const error = h('p', { id: 'login-error', class: 'error', role: 'alert', hidden: !message }, message ?? '');
  const button = h('button', { type: 'submit' }, 'Log in');
  const form = h('form', { class: 'login', 'aria-describedby': 'login-error' },
    error,
    field('API token', input, 'On the server: diskless api token (or the file api-token in the data directory).'),
    button);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    button.disabled = true;
    error.hidden = true;
    const refused = await ctx.login(token);
    button.disabled = false;
    if (refused) {
      error.textContent = refused;
      error.hidden = false;
      input.select();
    }
  });
  ctx.main.append(
    h('h1', { tabindex: '-1' }, 'Log in'),
    h('p', null, 'The dashboard manages this diskless server through its API. Enter the API token.'),
    form,
  );
  queueMicrotask(() => input.focus());
  return { title: 'Log in' };
}

// The REST API (/api/v1) with the admin's bearer token. Every call goes
// through request(): a 401 ends the session (the app shows the log-in form
// with the server's message); other refusals become ApiError with the API's
// stable code and message.

export const API = '/api/v1';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

export class Api {
  /**
   * @param {string} token
   * @param {(message: string) => void} onUnauthorized  called once per refused token
   */
  constructor(token, onUnauthorized) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
  }

  headers(extra = {}) {
    return { authorization: `Bearer ${this.token}`, ...extra };
  }

  async request(method, path, body) {
    const init = { method, headers: this.headers({ accept: 'application/json' }), cache: 'no-store' };
    if (body !== undefined) {
      init.headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(API + path, init);
    } catch (err) {
      throw new ApiError(0, 'NETWORK', `the server did not answer (${err.message})`);
    }
    const text = await res.text();
    let data = null;
    if (text && (res.headers.get('content-type') ?? '').includes('json')) {
      try {
        data = JSON.parse(text);
      } catch {
        throw new ApiError(res.status, 'BAD_JSON', `the server sent JSON that does not parse (${method} ${path})`);
      }
    }
    if (res.ok) return data;
    const code = data?.error ?? `HTTP_${res.status}`;
    const message = data?.message ?? `${method} ${path} answered ${res.status}`;
    if (res.status === 401) this.onUnauthorized?.(message);
    throw new ApiError(res.status, code, message);
  }

  get(path) { return this.request('GET', path); }
  post(path, body) { return this.request('POST', path, body); }
  patch(path, body) { return this.request('PATCH', path, body); }
  del(path) { return this.request('DELETE', path); }
}

/** A path segment from untrusted text (a MAC or an image name read from the API). */
export const seg = (s) => encodeURIComponent(String(s));

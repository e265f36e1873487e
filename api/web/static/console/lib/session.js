// The credential of this browser tab (sessionStorage: gone when the tab closes) and who it is.
// The server checks every call against its access table; `may` only decides what to offer.

const KEY = "hes.console.credential";

export function storedCredential() {
  return window.sessionStorage.getItem(KEY);
}

export function keepCredential(value) {
  window.sessionStorage.setItem(KEY, value);
}

export function forgetCredential() {
  window.sessionStorage.removeItem(KEY);
}

/** HTTP headers carrying a token (`Bearer`) or an API key (`hes_…`). */
export function authHeaders(credential) {
  if (!credential) return {};
  const value = credential.trim();
  return value.startsWith("hes_") ? { "X-API-Key": value } : { Authorization: `Bearer ${value}` };
}

/** True when the signed-in caller's credentials open this door (`Mutation.disconnectMeter`, …). */
export function may(me, door) {
  return Boolean(me && me.allowed.includes(door));
}

/** The most telling role, for the header badge. */
export function mainRole(me) {
  for (const role of ["admin", "operator", "auditor", "viewer", "customer"]) {
    if (me.roles.includes(role)) return role;
  }
  return "none";
}

export const ME = `{ me { subject roles scopes customerAccount credential apiKeyPrefix expiresAt allowed } }`;

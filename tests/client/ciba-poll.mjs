// A CIBA client built on openid-client (a certified OpenID relying-party library), configured
// only from the gateway's discovery document; it validates the ID token (signature from jwks_uri,
// alg against id_token_signing_alg_values_supported) and calls userinfo. Usage:
//   node ciba-poll.mjs <issuer> <client_id> <client_secret> <login_hint> <binding_message> [refresh]
// With `refresh`, it also asks for offline_access and refreshes with the refresh token it gets
// (the library's refresh grant; the new ID token validated the same way).
// Prints one JSON line with what it learned; exits non-zero on any error.
import * as client from 'openid-client';

const [issuer, clientId, clientSecret, loginHint, bindingMessage, mode] = process.argv.slice(2);

const config = await client.discovery(
  new URL(issuer),
  clientId,
  undefined,
  client.ClientSecretBasic(clientSecret),
  { execute: [client.allowInsecureRequests] }, // the test gateway listens on plain http://127.0.0.1
);

// Report every token-endpoint error on stderr, so the test can tell the client is polling.
config[client.customFetch] = async (url, options) => {
  const res = await fetch(url, options);
  if (String(url) === config.serverMetadata().token_endpoint && res.status !== 200) {
    console.error(`token endpoint: ${res.status} ${await res.clone().text()}`);
  }
  return res;
};

const meta = config.serverMetadata();
if (!meta.backchannel_authentication_endpoint) throw new Error('no backchannel endpoint in discovery');

const ack = await client.initiateBackchannelAuthentication(config, {
  scope: mode === 'refresh' ? 'openid email offline_access' : 'openid email',
  login_hint: loginHint,
  binding_message: bindingMessage,
});
console.error(`initiated: expires_in=${ack.expires_in} interval=${ack.interval}`);

const tokens = await client.pollBackchannelAuthenticationGrant(config, ack);
const claims = tokens.claims();
// As OpenID Connect clients do next: userinfo with the access token, at the advertised endpoint.
const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
let refreshed = null;
if (mode === 'refresh') {
  if (!tokens.refresh_token) throw new Error('no refresh token');
  const next = await client.refreshTokenGrant(config, tokens.refresh_token);
  refreshed = {
    sub: next.claims()?.sub,
    rotated: typeof next.refresh_token === 'string' && next.refresh_token !== tokens.refresh_token,
    new_access_token: next.access_token !== tokens.access_token,
  };
}
console.log(JSON.stringify({
  refreshed,
  sub: claims.sub,
  iss: claims.iss,
  aud: claims.aud,
  email: claims.email,
  token_type: tokens.token_type,
  has_access_token: typeof tokens.access_token === 'string',
  userinfo,
}));

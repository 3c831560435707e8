// A CIBA ping client built on openid-client (a certified OpenID relying-party library),
// configured only from the gateway's discovery document. It listens for the ping on its own
// HTTPS endpoint, checks the bearer and the body, then redeems the grant at the token endpoint
// with the library's grant request (ID token validated from jwks_uri). Usage:
//   node ciba-ping.mjs <issuer> <client_id> <client_secret> <login_hint> <port> <cert.pem> <key.pem>
// Prints one JSON line with what it learned; exits non-zero on any error.
import * as client from 'openid-client';
import { createServer } from 'node:https';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';

const [issuer, clientId, clientSecret, loginHint, port, cert, key] = process.argv.slice(2);

const config = await client.discovery(
  new URL(issuer),
  clientId,
  undefined,
  client.ClientSecretBasic(clientSecret),
  { execute: [client.allowInsecureRequests] }, // the test gateway listens on plain http://127.0.0.1
);
const meta = config.serverMetadata();
if (!meta.backchannel_token_delivery_modes_supported?.includes('ping')) {
  throw new Error('ping is not advertised');
}

const notificationToken = randomBytes(24).toString('base64url');
let gotPing;
const pinged = new Promise((resolve, reject) => { gotPing = { resolve, reject }; });
const server = createServer({ cert: readFileSync(cert), key: readFileSync(key) }, (req, res) => {
  let body = '';
  req.on('data', (c) => { body += c; });
  req.on('end', () => {
    res.writeHead(204).end();
    if (req.method !== 'POST' || req.headers.authorization !== `Bearer ${notificationToken}`) {
      gotPing.reject(new Error(`unexpected call: ${req.method} ${req.headers.authorization}`));
    } else {
      gotPing.resolve({ body: JSON.parse(body), contentType: req.headers['content-type'] });
    }
  });
});
await new Promise((resolve) => server.listen(Number(port), '127.0.0.1', resolve));

const ack = await client.initiateBackchannelAuthentication(config, {
  scope: 'openid email',
  login_hint: loginHint,
  client_notification_token: notificationToken,
});
console.error(`initiated: expires_in=${ack.expires_in}`);

const ping = await pinged;
server.close();
if (JSON.stringify(ping.body) !== JSON.stringify({ auth_req_id: ack.auth_req_id })) {
  throw new Error(`unexpected ping body: ${JSON.stringify(ping.body)}`);
}
console.error('pinged');

const tokens = await client.genericGrantRequest(config, 'urn:openid:params:grant-type:ciba', {
  auth_req_id: ack.auth_req_id,
});
const claims = tokens.claims();
console.log(JSON.stringify({
  sub: claims.sub,
  iss: claims.iss,
  aud: claims.aud,
  email: claims.email,
  token_type: tokens.token_type,
  has_access_token: typeof tokens.access_token === 'string',
  ping_content_type: ping.contentType,
}));

// A FAPI-CIBA client built on openid-client, as a bank's developer writes one from the library's
// documentation: discovery over TLS, client authentication by `PrivateKeyJwt` (PS256 or ES256,
// the algorithm following the key) or `TlsClientAuth`, a signed authentication request (CIBA
// §7.1.1: the parameters only inside a JWS from the client's key), mutual TLS on every call
// through the library's `customFetch` (undici with the client's certificate), the poll grant,
// and userinfo with the certificate-bound access token. Usage:
//   node ciba-fapi.mjs <issuer> <client_id> <private_key_jwt|tls_client_auth> <key.pem> <PS256|ES256>
//                      <kid> <cert.pem> <cert-key.pem> <ca.pem> <login_hint> <binding_message>
// Prints one JSON line (the ID token's sub, the access token's cnf, userinfo); exits non-zero on
// any error.
import * as client from 'openid-client';
import { Agent, fetch as undiciFetch } from 'undici';
import { readFileSync } from 'node:fs';
import { webcrypto, randomUUID } from 'node:crypto';

const [issuer, clientId, method, keyFile, alg, kid, certFile, certKeyFile, caFile, loginHint, bindingMessage] =
  process.argv.slice(2);

// Mutual TLS for every request the library makes.
const agent = new Agent({
  connect: { cert: readFileSync(certFile), key: readFileSync(certKeyFile), ca: readFileSync(caFile) },
});
const mtlsFetch = (url, options) => undiciFetch(url, { ...options, dispatcher: agent });

// The client's signing key, for its assertions and its request objects.
const pem = readFileSync(keyFile, 'utf8');
const der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
const algorithm = alg === 'PS256'
  ? { name: 'RSA-PSS', hash: 'SHA-256' }
  : { name: 'ECDSA', namedCurve: 'P-256' };
const key = await webcrypto.subtle.importKey('pkcs8', der, algorithm, false, ['sign']);

const auth = method === 'private_key_jwt'
  ? client.PrivateKeyJwt({ key, kid })
  : client.TlsClientAuth();
const config = await client.discovery(new URL(issuer), clientId, undefined, auth, {
  [client.customFetch]: mtlsFetch,
});
config[client.customFetch] = mtlsFetch;

// The signed authentication request (a compact JWS, signed with WebCrypto).
const b64 = (bytes) => Buffer.from(bytes).toString('base64url');
const now = Math.floor(Date.now() / 1000);
const header = b64(JSON.stringify({ alg, kid, typ: 'JWT' }));
const payload = b64(JSON.stringify({
  iss: clientId,
  aud: config.serverMetadata().issuer,
  iat: now,
  nbf: now,
  exp: now + 300,
  jti: randomUUID(),
  scope: 'openid email',
  login_hint: loginHint,
  binding_message: bindingMessage,
}));
const signature = await webcrypto.subtle.sign(
  alg === 'PS256' ? { name: 'RSA-PSS', saltLength: 32 } : { name: 'ECDSA', hash: 'SHA-256' },
  key,
  Buffer.from(`${header}.${payload}`),
);
const request = `${header}.${payload}.${b64(signature)}`;

const ack = await client.initiateBackchannelAuthentication(config, { request });
console.error(`initiated: expires_in=${ack.expires_in} interval=${ack.interval}`);
const tokens = await client.pollBackchannelAuthenticationGrant(config, ack);
const claims = tokens.claims();
const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
const accessClaims = JSON.parse(Buffer.from(tokens.access_token.split('.')[1], 'base64url'));
console.log(JSON.stringify({ sub: claims.sub, cnf: accessClaims.cnf ?? null, userinfo }));

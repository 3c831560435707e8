// Dynamic client registration with openid-client, then its CIBA poll flow with the client it
// registered: discovery, client.dynamicClientRegistration (which authenticates the registered
// client with ClientSecretPost and the issued secret, so the metadata asks for that method),
// then backchannel authentication and polling, the ID token validated from discovery. Usage:
//   node ciba-register.mjs <issuer> <login_hint> <binding_message>
// Prints one JSON line with what it learned; exits non-zero on any error.
import * as client from 'openid-client';

const [issuer, loginHint, bindingMessage] = process.argv.slice(2);

const config = await client.dynamicClientRegistration(
  new URL(issuer),
  {
    client_name: 'openid-client smart speaker',
    grant_types: ['urn:openid:params:grant-type:ciba'],
    backchannel_token_delivery_mode: 'poll',
    token_endpoint_auth_method: 'client_secret_post',
    scope: 'openid email',
  },
  undefined,
  { execute: [client.allowInsecureRequests] }, // the test gateway listens on plain http://127.0.0.1
);
const registered = config.clientMetadata();
console.error(`registered ${registered.client_name}`);

config[client.customFetch] = async (url, options) => {
  const res = await fetch(url, options);
  if (String(url) === config.serverMetadata().token_endpoint && res.status !== 200) {
    console.error(`token endpoint: ${res.status} ${await res.clone().text()}`);
  }
  return res;
};

const ack = await client.initiateBackchannelAuthentication(config, {
  scope: 'openid email',
  login_hint: loginHint,
  binding_message: bindingMessage,
});
const tokens = await client.pollBackchannelAuthenticationGrant(config, ack);
const claims = tokens.claims();
console.log(JSON.stringify({
  client_id: registered.client_id,
  has_registration_access_token: typeof registered.registration_access_token === 'string',
  registration_client_uri: registered.registration_client_uri,
  token_endpoint_auth_method: registered.token_endpoint_auth_method,
  sub: claims.sub,
  iss: claims.iss,
  aud: claims.aud,
}));

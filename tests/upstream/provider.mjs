// A real, unmodified OpenID provider for the integration tests: panva's oidc-provider with a
// confidential client for client_credentials and authorization_code + PKCE, and accounts whose
// id is whatever is typed at the (development) login form.
//   ISSUER=http://127.0.0.1:8080 PORT=3000 [PROXY=1] node provider.mjs   (PORT=0: any free port)
// The issuer is the gateway's public URL: the gateway serves the issuer's host (GW-02).
import Provider from 'oidc-provider';

const issuer = process.env.ISSUER;
const port = Number(process.env.PORT);
if (!issuer || !process.env.PORT || !Number.isInteger(port)) {
  console.error('ISSUER and PORT are required');
  process.exit(2);
}

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'app-client',
      client_secret: 'app-secret',
      grant_types: ['authorization_code', 'client_credentials', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1:9/cb'],
            token_endpoint_auth_method: 'client_secret_basic',
    },
    // CIBA clients of the gateway, registered here too: the gateway logs users in on their
    // behalf (redirect back to the gateway's callback) and hands them this provider's tokens.
    {
      client_id: 'post-client',
      client_secret: 'post-client-upstream-secret',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: [`${issuer}/approve/callback`],
      token_endpoint_auth_method: 'client_secret_post',
    },
    {
      client_id: 'basic-client',
      client_secret: 'basic-client-upstream-secret',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: [`${issuer}/approve/callback`],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: true },
    userinfo: { enabled: true },
  },
    pkce: { required: () => true },
  // Release email in ID tokens too, so the gateway can bind identities by e-mail.
  claims: { openid: ['sub'], email: ['email'] },
  conformIdTokenClaims: false,
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id, email: `${id}@example.com` }; } };
  },
});

// As shipped, oidc-provider does not trust X-Forwarded-* and builds its URLs from Host: the
// gateway must present the public host. PROXY=1 turns trust on, as a deployment behind a
// reverse proxy may.
provider.proxy = process.env.PROXY === '1';
// Observation only: which trace each token request names (the tests read it on stdout).
provider.use(async (ctx, next) => {
  if (ctx.method === 'POST' && ctx.path === '/token') {
    console.log(`token request traceparent=${ctx.get('traceparent') || '-'}`);
  }
  await next();
});

// PORT=0 lets the system pick a free port, printed here for the harness: a port picked by the
// harness and bound later can be taken in between.
const server = provider.listen(port, '127.0.0.1', () =>
  console.log(`oidc-provider listening on ${server.address().port} for ${issuer}`),
);

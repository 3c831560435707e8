// The provider users would otherwise pick for CIBA, for benches/http.sh: panva's oidc-provider
// with its CIBA feature on (poll mode), configured the way its documentation asks — the five
// functions it requires, no tuning — and one confidential client like the quickstart's
// `my-client`. Accounts are whatever the login_hint names; the user is "reached" by doing
// nothing (the benchmark polls pending requests and creates new ones).
//   PORT=3000 node ciba_provider.mjs
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
if (!port) {
  console.error('PORT is required');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'my-client',
      client_secret: 'supersecret',
      grant_types: ['urn:openid:params:grant-type:ciba'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_post',
      backchannel_token_delivery_mode: 'poll',
    },
  ],
  features: {
    devInteractions: { enabled: false },
    ciba: {
      enabled: true,
      deliveryModes: ['poll'],
      async processLoginHint(ctx, loginHint) {
        return loginHint;
      },
      async verifyUserCode(ctx, account, userCode) {},
      async validateRequestContext(ctx, requestContext) {},
      async triggerAuthenticationDevice(ctx, request, account, client) {},
    },
  },
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id }; } };
  },
});

provider.listen(port, '127.0.0.1', () => console.log(`oidc-provider (CIBA) listening on ${port}`));

"""Releases the user's e-mail and username by scope (the toolkit releases only `sub` unless told)."""
from oauth2_provider.oauth2_validators import OAuth2Validator


class Validator(OAuth2Validator):
    def get_additional_claims(self, request):
        return {
            "email": request.user.email,
            "preferred_username": request.user.username,
        }

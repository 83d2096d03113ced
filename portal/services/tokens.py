"""The API token service's old import path, kept for scripts written against it (the lab's
`portal_loop_check.sh` creates its token with `from portal.services.tokens import create_token`).
The service lives in portal/services/delivery/tokens.py."""

from portal.services.delivery.tokens import NewToken, create_token

__all__ = ["NewToken", "create_token"]

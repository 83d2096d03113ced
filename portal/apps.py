from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "SEM lab portal"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Webhook listeners (REST API issue): registered once per process, at start-up.
        from portal.services.webhooks import register_listeners

        register_listeners()

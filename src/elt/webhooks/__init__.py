"""Webhook ingestion: declared sources, signature checks, group commit into raw tables, a durable local spool."""

from elt.webhooks.signatures import GitHub, HeaderHmac, Shopify, Signature, Stripe
from elt.webhooks.source import WebhookSource, clear_webhooks, registered_webhooks

__all__ = ["GitHub", "HeaderHmac", "Shopify", "Signature", "Stripe", "WebhookSource", "clear_webhooks",
           "registered_webhooks"]

"""Channel senders: deliver replies on sf.outbound to the customer's channel (SMS, WhatsApp, Slack...)."""

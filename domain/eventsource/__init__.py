"""The event source: external events, raw webhook payloads, ingest mappings.

``events`` holds what is recorded (external events, raw-event receipts, the
audit of deletions and of refused deliveries), ``mappings`` how a webhook
payload becomes an event, ``signatures`` how a delivery proves its sender.
"""

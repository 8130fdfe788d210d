"""The fault suite: Redis stalled, killed, restarted and slowed under two gateway processes and
load, in both ``store.on_error`` modes; a big usage report beside chats; clients sharing one
X-Request-ID; upstreams that die, stall or garble mid-stream. Afterwards no key is locked out and
usage equals what was served."""

"""The wire between roles: message types, frame codec, errors, state machines and socket helpers."""

PROTOCOL_VERSION = b"FCS/1"

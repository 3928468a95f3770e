"""Faithful fakes of the outside services the edge and Proxmox adapters talk to, as ASGI apps.

`cloudflare_api.FakeCloudflare` and `proxmox_api.FakeProxmox` each hold their
state in memory, expose a fault-injection API on the object, and serve over real
HTTP(S) through `serve.serve_app`, so the real client libraries (`cloudflare`,
`proxmoxer`) can be pointed at them.
"""

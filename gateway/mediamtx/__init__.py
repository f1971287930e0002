"""MediaMTX as an alternative media plane (issue #15.5): feedgate's client of MediaMTX's
control API v3 (:mod:`client`) and the supervisor (:mod:`supervisor`) that meters MediaMTX's
sessions per tenant and kicks a session when its token expires or its grant is revoked,
which MediaMTX itself never does (its issue 4300). Admission is the auth hook's,
:mod:`gateway.http.mediamtx`."""

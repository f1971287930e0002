"""PTZ brokered across organisations: ONVIF client, arbitration, the service every adapter
(gRPC, REST, CLI, the ONVIF facade) shares, and the SOAP codec the facade and the camera fake
use."""

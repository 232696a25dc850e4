//! MQTT revision notifications and node status (#20): written by a helper.

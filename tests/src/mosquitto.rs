//! A real mosquitto broker on a loopback port of its own (#20): written by a helper.

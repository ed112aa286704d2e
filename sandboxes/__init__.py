"""Loopback simulators of Dataverse and Spotler Mail+ for tests and the demo. Never deployed."""

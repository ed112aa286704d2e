"""Spotler Mail+ REST adapter."""

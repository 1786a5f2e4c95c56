"""Fixtures for a real etcd."""

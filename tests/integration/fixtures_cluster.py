"""Fixtures for real systemd machines (systemd-nspawn)."""

"""Test doubles that speak real protocols over loopback sockets (see ``bybit_server``)."""

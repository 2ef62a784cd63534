"""Throwaway PostgreSQL and Redis servers, the TMI-shaped fixture and its data generator.

Test tooling only: it is not part of the collection build (see galaxy.yml build_ignore).
"""

-- Run once as a PostgreSQL superuser. The broker creates and migrates its own tables at start
-- (under an advisory lock, so several brokers starting at once do not race); it needs only a
-- database it owns.
CREATE ROLE soap_broker LOGIN PASSWORD 'change-me';
CREATE DATABASE soap_broker OWNER soap_broker;

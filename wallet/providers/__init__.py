"""Small clients of third parties (payment providers), each with its base URL from settings and a timeout."""

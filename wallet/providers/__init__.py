"""Small clients of third parties (sign-in and payment providers), each with its base URL from settings."""

"""Who may see what: Flex token validation, signed links and grants, limits and revocation."""

"""genkit's audio domain (work in progress): registers nothing yet."""

"""genkit's text domain (work in progress): registers nothing yet."""

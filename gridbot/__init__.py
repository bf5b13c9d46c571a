
# The release: CHANGELOG.md says what each one changed; ``python grid_bot.py --version`` prints it.
__version__ = "0.6.0"

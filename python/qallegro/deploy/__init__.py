"""qallegro.deploy"""

"""qallegro.hpo"""

"""qallegro.data"""

"""combiner"""

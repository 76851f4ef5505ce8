#!/bin/sh
echo original

// Preact with htm: components written as tagged templates, no build step.
import { h, render, Fragment, createContext } from "preact";
import {
  useState,
  useEffect,
  useRef,
  useMemo,
  useCallback,
  useContext,
} from "preact/hooks";
import htm from "htm";

export const html = htm.bind(h);
export {
  h,
  render,
  Fragment,
  createContext,
  useState,
  useEffect,
  useRef,
  useMemo,
  useCallback,
  useContext,
};
